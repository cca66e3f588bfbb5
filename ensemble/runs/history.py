"""Reading runs back: status from the run's event history (so it works with no worker running and
for runs that failed), and results."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from temporalio.api.enums.v1 import EventType, PendingActivityState, PendingWorkflowTaskState
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode

from ensemble.spec import protocol as attributes
from ensemble.runtime.connection import FLOW_ATTRIBUTE
from ensemble.runtime.converter import decode_failure, decode_payload
from ensemble.spec.errors import EnsembleError
from ensemble.spec import RunStatusView, StepRecord, ToolRefusal, Usage

# Activities a gate runs for itself (resolving approvers, notifying): shown as the gate, not as steps.
RESOLVE_ACTIVITY, NOTIFY_ACTIVITY = "ensemble.approvers", "ensemble.notify"
INTERNAL_ACTIVITIES = {RESOLVE_ACTIVITY, NOTIFY_ACTIVITY}
STATUS_NAMES = {
    WorkflowExecutionStatus.RUNNING: "running",
    WorkflowExecutionStatus.COMPLETED: "completed",
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.CANCELED: "canceled",
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.TIMED_OUT: "timed_out",
    WorkflowExecutionStatus.CONTINUED_AS_NEW: "running",
}
_CLOSE_STATUS = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: ("activity_task_completed_event_attributes", "completed"),
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: ("activity_task_failed_event_attributes", "failed"),
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: ("activity_task_timed_out_event_attributes", "timed_out"),
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: ("activity_task_canceled_event_attributes", "canceled"),
}


def _iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.isoformat(timespec="milliseconds")


_WRAPPERS = ("activity task failed", "activity error", "child workflow execution failed")


def failure_text(failure: Failure) -> str:
    """A failure's message with the causes that add something, outermost first."""
    parts: list[str] = []
    failure = decode_failure(failure)  # encrypted message and stack trace (runtime/converter.py)
    while failure is not None:
        message = failure.message.strip()
        if message and message.lower() not in _WRAPPERS and not any(message in p for p in parts):
            parts.append(message)
        failure = failure.cause if failure.HasField("cause") else None
    return ": ".join(parts)


def summarize(value: Any, width: int = 90) -> str | None:
    """A step output in one line: a record as `key: value` pairs with nested values abbreviated,
    a list by its length and first items, long text cut with an ellipsis."""
    if value is None:
        return None

    def brief(v: Any) -> str:
        if isinstance(v, dict):
            return "{…}" if v else "{}"
        if isinstance(v, list):
            return f"[{len(v)} items]"
        if isinstance(v, str):
            v = " ".join(v.split())
            return v if len(v) <= 40 else v[:39] + "…"
        return json.dumps(v, default=str)

    if isinstance(value, dict):
        text = ", ".join(f"{k}: {brief(v)}" for k, v in value.items()) or "{}"
    elif isinstance(value, list):
        text = f"{len(value)} items" + (": " + ", ".join(brief(v) for v in value[:3]) if value else "")
    else:
        text = brief(value)
    return text if len(text) <= width else text[: width - 1] + "…"


async def get_run(client: Client, run_id: str) -> tuple[WorkflowHandle, Any]:
    handle = client.get_workflow_handle(run_id)
    try:
        return handle, await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise EnsembleError(f"no run with id '{run_id}' in namespace '{client.namespace}'") from None
        raise


def _child_step_name(prefix: str, name: str) -> str:
    """A child run's step name as a path in its parent (children are named after their step)."""
    if name == prefix or name.startswith((f"{prefix}.", f"{prefix}[")):
        return name
    head = prefix.rsplit(".", 1)[0] if "." in prefix else ""
    return f"{head}.{name}" if head else name


async def _history(client: Client, workflow_id: str) -> list[tuple[int, Any]]:
    """(run index, event) for a workflow's whole chain of runs (it may have continued as new);
    event ids restart in each run, so the index tells them apart."""
    runs: list[list[Any]] = []
    run_id: str | None = None
    while True:
        events = [e async for e in client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history_events()]
        runs.insert(0, events)
        previous = events[0].workflow_execution_started_event_attributes.continued_execution_run_id if events else ""
        if not previous:
            return [(i, e) for i, run in enumerate(runs) for e in run]
        run_id = previous


async def describe_run(client: Client, run_id: str) -> RunStatusView:
    handle, desc = await get_run(client, run_id)
    steps: dict[tuple[int, int], StepRecord] = {}
    gates: dict[str, StepRecord] = {}
    scheduled_at: dict[tuple[int, int], datetime] = {}
    children: list[str] = []
    error: str | None = None
    for run_index, event in await _history(client, run_id):
        etype = event.event_type
        if etype == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            children.append(event.start_child_workflow_execution_initiated_event_attributes.workflow_id)
            continue
        when = event.event_time.ToDatetime().replace(tzinfo=timezone.utc)
        if etype == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED and run_index == 0:
            from ensemble.runs.dlq import reused_steps  # a redrive or fork: the recorded results it reused

            payloads = event.workflow_execution_started_event_attributes.input.payloads
            [started] = await client.data_converter.decode(payloads) if len(payloads) == 1 else [None]
            for i, (name, agent, output) in enumerate(reused_steps(started)):
                steps[-1, i] = StepRecord(name=name, agent=agent, status="reused", output=output, started_at=_iso(when))
        elif etype == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_type.name in INTERNAL_ACTIVITIES:  # a gate's bookkeeping, shown as the gate
                if attrs.activity_type.name == NOTIFY_ACTIVITY:
                    [note] = await client.data_converter.decode(attrs.input.payloads)
                    _gate_event(gates, note, when)
                continue
            steps[run_index, event.event_id] = StepRecord(
                name=attrs.activity_id.split("#")[0], agent=attrs.activity_type.name, status="scheduled", started_at=_iso(when),
                kind="compensation" if attrs.activity_id.endswith("#compensate") else "agent",  # an undo (workflows/saga.py)
            )
            scheduled_at[run_index, event.event_id] = when
        elif etype == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs = event.activity_task_started_event_attributes
            if (run_index, attrs.scheduled_event_id) not in steps:
                continue
            rec = steps[run_index, attrs.scheduled_event_id]
            rec.status, rec.attempts, rec.attempt_started_at = "running", attrs.attempt, _iso(when)
        elif etype in _CLOSE_STATUS:
            field, status = _CLOSE_STATUS[etype]
            attrs = getattr(event, field)
            if (run_index, attrs.scheduled_event_id) not in steps:
                continue
            rec = steps[run_index, attrs.scheduled_event_id]
            rec.status, rec.ended_at = status, _iso(when)
            rec.latency_ms = round((when - scheduled_at[run_index, attrs.scheduled_event_id]).total_seconds() * 1000, 1)
            if status == "completed" and attrs.result.payloads:
                [value] = await client.data_converter.decode(attrs.result.payloads)
                rec.output = value.get("output") if isinstance(value, dict) else value
                if isinstance(value, dict):  # a model-backed agent's tokens, model and refused tool calls
                    rec.usage = Usage.model_validate(value["usage"]) if value.get("usage") else None
                    rec.model, rec.refusals = value.get("model"), [ToolRefusal.model_validate(r) for r in value.get("refusals") or []]
            elif status in ("failed", "timed_out"):
                rec.error = failure_text(attrs.failure)
        elif etype == EventType.EVENT_TYPE_MARKER_RECORDED:  # a fast agent (local activity): one marker per result
            rec = await _local_activity(client, event.marker_recorded_event_attributes, when)
            if rec is not None:
                steps[run_index, event.event_id] = rec
        elif etype == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
            error = failure_text(event.workflow_execution_failed_event_attributes.failure)
        elif etype == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT:
            error = "the run exceeded its execution timeout"
    by_id = {rec.name: rec for rec in steps.values()}
    for pending in desc.raw_description.pending_activities:
        rec = by_id.get(pending.activity_id.split("#")[0])
        if rec is None or rec.ended_at:
            continue
        rec.attempts = max(rec.attempts, pending.attempt)
        if pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
            rec.status = "running"
        elif pending.attempt > 1:
            rec.status = "retrying"
        if pending.HasField("last_failure"):
            rec.error = failure_text(pending.last_failure)
    records = sorted([*steps.values(), *gates.values()], key=lambda r: r.started_at or "")
    for rec in records:
        rec.summary = rec.summary or summarize(rec.output)
    for child in children:  # subtasks and chats run as child workflows: their steps are this run's
        prefix = child[len(run_id) + 1 :].split("#")[0]
        try:
            view = await describe_run(client, child)
        except EnsembleError:
            continue  # initiated but not started yet
        records += [s.model_copy(update={"name": _child_step_name(prefix, s.name)}) for s in view.steps]
    flow = desc.typed_search_attributes.get(FLOW_ATTRIBUTE)
    status = STATUS_NAMES.get(desc.status, "running") if desc.status else "running"
    waiting = _open_gates(desc) if status == "running" else []
    return RunStatusView(
        run_id=run_id,
        flow=flow,
        status="waiting_for_approval" if waiting else status,
        pending_approvals=waiting,
        steps=records,
        error=error,
        started_at=_iso(desc.start_time),
        ended_at=_iso(desc.close_time),
        usage=total_usage(records),
    )


def total_usage(records: list[StepRecord]) -> Usage | None:
    """The token usage of every step (child workflows' steps included), summed."""
    used = [r.usage for r in records if r.usage is not None]
    if not used:
        return None
    prompt, completion = sum(u.prompt_tokens for u in used), sum(u.completion_tokens for u in used)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


async def _local_activity(client: Client, attrs: Any, when: datetime) -> StepRecord | None:
    """The step record of a fast agent from its local-activity marker: id, type, attempt, when it
    finished and its result (or failure). Start and latency are not recorded by Temporal for
    local activities; `ended_at` is when its workflow task recorded it."""
    if attrs.marker_name != "core_local_activity" or "data" not in attrs.details:
        return None
    try:
        data = json.loads(decode_payload(attrs.details["data"].payloads[0]).data)
    except (ValueError, IndexError):
        return None
    rec = StepRecord(name=str(data.get("activity_id", "?")).split("#")[0], agent=str(data.get("activity_type", "?")),
                     status="completed", attempts=int(data.get("attempt", 1)), ended_at=_iso(when), started_at=_iso(when))  # fmt: skip
    if attrs.HasField("failure"):
        rec.status, rec.error = "failed", failure_text(attrs.failure)
    elif "result" in attrs.details and attrs.details["result"].payloads:
        [value] = await client.data_converter.decode(attrs.details["result"].payloads)
        rec.output = value.get("output") if isinstance(value, dict) else value
    return rec


def _gate_event(gates: dict[str, StepRecord], note: Any, when: datetime) -> None:
    """Fold a gate's notification (opened, escalated, decided) into its step record."""
    if not isinstance(note, dict) or "path" not in note:
        return
    rec = gates.get(note["path"])
    if rec is None or rec.ended_at:  # first opening, or a new round after changes were requested
        rec = gates[note["path"]] = StepRecord(name=note["path"], agent="human", kind="gate", status="waiting", started_at=_iso(when))
    rec.attempts = note.get("tier", 1)
    if note.get("event") != "decided":
        return
    decided = [d for d in note.get("decisions", []) if d.get("decision")]
    rec.ended_at = _iso(when)
    rec.latency_ms = round((when - datetime.fromisoformat(rec.started_at)).total_seconds() * 1000, 1)
    rec.status = "completed" if note.get("status") in ("approved", "changes_requested") else "failed"
    rec.output = {"decision": note.get("status"), "decisions": decided}
    if rec.status == "failed":
        who = ", ".join(d["by"] for d in decided if d["decision"] == "reject") or "timeout"
        rec.error = f"{note.get('status', '').replace('_', ' ')} by {who}"


def _open_gates(desc: Any) -> list[dict[str, Any]]:
    """The open gates a running run publishes in visibility."""
    raw = desc.typed_search_attributes.get(attributes.PENDING)
    try:
        return json.loads(raw) if raw else []
    except ValueError:
        return []


async def wait_result(client: Client, run_id: str) -> dict[str, Any]:
    """Wait for the run to end: `{run_id, status, result}` (plus `error` when it did not complete)."""
    handle, _ = await get_run(client, run_id)
    try:
        outcome = await handle.result()
    except WorkflowFailureError:
        view = await describe_run(client, run_id)
        return {"run_id": run_id, "status": view.status, "result": None, "error": view.error or view.status}
    output = outcome.get("output") if isinstance(outcome, dict) else getattr(outcome, "output", outcome)
    return {"run_id": run_id, "status": "completed", "result": output}


async def stalled(client: Client, run_id: str, task_queue: str, grace_s: float = 3.0) -> bool:
    """Whether the run has work on `task_queue` that no worker has picked up for `grace_s` (a
    workflow task, or an activity attempt of an agent without a queue of its own). Pollers of a
    worker that died stay listed on the server for minutes, so this looks at the run itself."""
    desc = (await client.get_workflow_handle(run_id).describe()).raw_description
    now = datetime.now(timezone.utc)

    def waited(ts: Any) -> float:
        return (now - ts.ToDatetime().replace(tzinfo=timezone.utc)).total_seconds()

    wft = desc.pending_workflow_task
    if desc.HasField("pending_workflow_task") and wft.state == PendingWorkflowTaskState.PENDING_WORKFLOW_TASK_STATE_SCHEDULED:
        if waited(wft.scheduled_time) > grace_s:
            return True
    own_queue = await _activities_on(client, run_id, task_queue) if desc.pending_activities else set()
    for act in desc.pending_activities:
        if act.activity_id in own_queue and act.state == PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED:
            ready = act.next_attempt_schedule_time if act.HasField("next_attempt_schedule_time") else act.scheduled_time
            if waited(ready) > grace_s:
                return True
    return False


async def _activities_on(client: Client, run_id: str, task_queue: str) -> set[str]:
    """Activity ids of the run scheduled on `task_queue`."""
    ids = set()
    async for event in client.get_workflow_handle(run_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.task_queue.name == task_queue:
                ids.add(attrs.activity_id)
    return ids
