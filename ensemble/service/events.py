"""Live progress of a run as server-sent events, read from Temporal's own history long-poll
(`fetch_history_events(wait_new_event=True)`): every event the run records reaches a follower, in
order, and a follower that reconnects with `Last-Event-ID` resumes after the history event it saw
last (the SSE id is the history event id). Nothing is kept on the side, so nothing can be lost.

Events: `run_started`, `step_started`, `step_retried` (an attempt after the first), `step_finished`
(with its status, attempts, error and model `usage`), `tokens` (model tokens a step used),
`gate_opened` / `gate_escalated` / `gate_decided`, `decision` (a person's decision and what the
run answered), `subtask_started`, `run_ended`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import timezone
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from ensemble.runs.history import ACTIVITY_CLOSED as _CLOSED
from ensemble.runs.history import failure_text
from ensemble.spec import Usage, protocol

E = EventType
_ENDED = {
    E.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED: "completed",
    E.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED: "failed",
    E.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED: "canceled",
    E.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED: "terminated",
    E.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT: "timed_out",
    E.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW: "continued",
}


async def _decode(client: Client, payloads: Any) -> Any:
    if not payloads.payloads:
        return None
    values = await client.data_converter.decode(payloads.payloads)
    return values[0] if len(values) == 1 else values


class _Follower:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.scheduled: dict[int, tuple[str, str]] = {}  # event id -> (activity id, agent)
        self.updates: dict[str, dict[str, Any]] = {}

    async def translate(self, event: Any) -> list[tuple[str, dict[str, Any]]]:
        etype = event.event_type
        at = event.event_time.ToDatetime().replace(tzinfo=timezone.utc).isoformat(timespec="milliseconds")
        out: list[tuple[str, dict[str, Any]]] = []
        if etype == E.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            out.append(
                ("run_started", {"workflow": event.workflow_execution_started_event_attributes.workflow_type.name})
            )
        elif etype == E.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            name = attrs.activity_type.name
            if name == protocol.NOTIFY:
                note = await _decode(self.client, attrs.input)
                if isinstance(note, dict):
                    kind = f"gate_{note.get('event', 'opened')}"
                    keep = ("gate", "path", "tier", "approvers", "quorum", "deadline", "status", "show")
                    out.append((kind, {k: note.get(k) for k in keep}))
            elif name not in protocol.GATE_ACTIVITIES:
                self.scheduled[event.event_id] = (attrs.activity_id, name)
                out.append(("step_started", {"step": protocol.step_of(attrs.activity_id), "agent": name}))
        elif etype == E.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs = event.activity_task_started_event_attributes
            if (known := self.scheduled.get(attrs.scheduled_event_id)) and attrs.attempt > 1:
                out.append(
                    ("step_retried", {"step": protocol.step_of(known[0]), "agent": known[1], "attempt": attrs.attempt})
                )
        elif etype in _CLOSED:
            field, status = _CLOSED[etype]
            attrs = getattr(event, field)
            known = self.scheduled.get(attrs.scheduled_event_id)
            if known is not None:
                data: dict[str, Any] = {"step": protocol.step_of(known[0]), "agent": known[1], "status": status}
                if status == "completed":
                    result = await _decode(self.client, attrs.result)
                    usage = result.get("usage") if isinstance(result, dict) else None
                    if usage:  # a dict, or a list as results send it compact (Usage.to_wire)
                        with contextlib.suppress(ValueError):
                            data["usage"] = Usage.model_validate(usage).model_dump()
                elif status in ("failed", "timed_out"):
                    data["error"] = failure_text(attrs.failure)
                out.append(("step_finished", data))
                if data.get("usage"):
                    out.append(("tokens", {"step": data["step"], "agent": known[1], **data["usage"]}))
        elif etype == E.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            out.append(
                (
                    "subtask_started",
                    {"workflow_id": event.start_child_workflow_execution_initiated_event_attributes.workflow_id},
                )
            )
        elif etype == E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            request = event.workflow_execution_update_accepted_event_attributes.accepted_request
            if request.input.name == protocol.DECIDE_UPDATE:
                value = await _decode(self.client, request.input.args)
                d = value if isinstance(value, dict) else {}
                self.updates[request.meta.update_id] = {k: d.get(k) for k in ("gate", "decision", "by", "comment")}
        elif etype == E.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED:
            attrs = event.workflow_execution_update_completed_event_attributes
            brief: dict[str, Any] | None = self.updates.get(attrs.meta.update_id)
            if brief is not None:
                if attrs.outcome.HasField("success"):
                    answer = await _decode(self.client, attrs.outcome.success)
                    out.append(
                        (
                            "decision",
                            {**brief, "accepted": True, "result": answer if isinstance(answer, dict) else None},
                        )
                    )
                else:
                    out.append(
                        ("decision", {**brief, "accepted": False, "refused": failure_text(attrs.outcome.failure)})
                    )
        elif etype in _ENDED:
            data = {"status": _ENDED[etype]}
            if etype == E.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
                data["error"] = failure_text(event.workflow_execution_failed_event_attributes.failure)
            out.append(("run_ended", data))
        return [(kind, {"at": at, **data}) for kind, data in out]


async def follow(client: Client, run_id: str, after: int = 0) -> AsyncIterator[tuple[int, str, dict[str, Any]]]:
    """(history event id, event name, data) for each event of the run after `after`, waiting for
    new ones until the run ends."""
    follower = _Follower(client)
    handle = client.get_workflow_handle(run_id)
    async for event in handle.fetch_history_events(wait_new_event=True):
        items = await follower.translate(event)  # earlier events still teach which step is which
        if event.event_id <= after:
            continue
        for kind, data in items:
            yield event.event_id, kind, data


KEEPALIVE_S = 15.0


async def stream(client: Client, run_id: str, after: int = 0, keepalive_s: float = KEEPALIVE_S) -> AsyncIterator[str]:
    """The SSE body: the run's events (see `follow`), a comment line every `keepalive_s` seconds
    while the run is quiet (so proxies keep the connection), an `error` event if reading fails."""
    queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=256)

    async def produce() -> None:
        try:
            async for event_id, kind, data in follow(client, run_id, after):
                await queue.put(frame(event_id, kind, data))
        except Exception as err:  # the stream is already open: say so as an event, never a traceback
            text = " ".join(str(err).split())[:300] or type(err).__name__
            await queue.put(frame(None, "error", {"message": text}))
        finally:
            await queue.put(None)

    producer = asyncio.create_task(produce())
    try:
        yield f": following run {run_id}\n\n"
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), keepalive_s)
            except asyncio.TimeoutError:
                yield ": keepalive\n\n"
                continue
            if item is None:
                return
            yield item
    finally:
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer


def frame(event_id: int | None, kind: str, data: dict[str, Any]) -> str:
    """One SSE frame."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, default=str, separators=(',', ':'))}\n\n"
