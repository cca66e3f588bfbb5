"""A run as `status` shows it (`RunStatusView`), built from the one history reader.

Every round of a loop is its own row: a step re-run after a change request, each round of a gate
(with its decisions), and the steps of each execution of a child workflow, with their own times.
Rows are in the order they started, child workflows' steps merged in among the parent's.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client

from ensemble.runs.history import failure_text, iso, read_history
from ensemble.runs.recorded import Call, GateNote, RunHistory
from ensemble.spec import RunStatusView, StepRecord, ToolRefusal, Usage, protocol
from ensemble.spec.errors import EnsembleError


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


def _latency(start: datetime | None, end: datetime | None) -> float | None:
    return round((end - start).total_seconds() * 1000, 1) if start and end else None


def call_record(call: Call) -> StepRecord:
    rec = StepRecord(
        name=call.step,
        agent=call.agent,
        status=call.status,
        kind="compensation" if call.compensation else "agent",
        attempts=call.attempts,
        started_at=iso(call.scheduled_at),
        ended_at=iso(call.ended_at),
        latency_ms=None if call.local else _latency(call.scheduled_at, call.ended_at),
        attempt_started_at=iso(call.attempt_started_at),
        output=call.output,
        error=call.error,
    )
    if isinstance(call.result, dict):  # a model-backed agent's tokens, model and refused tool calls
        rec.usage = Usage.model_validate(call.result["usage"]) if call.result.get("usage") else None
        rec.model = call.result.get("model")
        rec.refusals = [ToolRefusal.model_validate(r) for r in call.result.get("refusals") or []]
    return rec


def gate_records(notes: list[GateNote]) -> list[StepRecord]:
    """One record per round of each gate: opened (and escalated) until decided."""
    records: list[StepRecord] = []
    open_rounds: dict[str, tuple[StepRecord, datetime]] = {}
    for item in notes:
        note, when = item.note, item.at
        path = note.get("path")
        if not path:
            continue
        if path not in open_rounds:  # the first opening, or a new round after changes were requested
            rec = StepRecord(name=path, agent="human", kind="gate", status="waiting", started_at=iso(when))
            records.append(rec)
            open_rounds[path] = (rec, when)
        rec, opened = open_rounds[path]
        rec.attempts = note.get("tier", 1)
        if note.get("event") != "decided":
            continue
        del open_rounds[path]
        decided = [d for d in note.get("decisions", []) if d.get("decision")]
        rec.ended_at, rec.latency_ms = iso(when), _latency(opened, when)
        rec.status = "completed" if note.get("status") in ("approved", "changes_requested") else "failed"
        rec.output = {"decision": note.get("status"), "decisions": decided}
        if rec.status == "failed":
            who = ", ".join(d["by"] for d in decided if d["decision"] == "reject") or "timeout"
            rec.error = f"{note.get('status', '').replace('_', ' ')} by {who}"
    return records


def total_usage(records: list[StepRecord]) -> Usage | None:
    """The token usage of every step (child workflows' steps included), summed."""
    used = [r.usage for r in records if r.usage is not None]
    if not used:
        return None
    prompt, completion = sum(u.prompt_tokens for u in used), sum(u.completion_tokens for u in used)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def _child_step_name(prefix: str, name: str) -> str:
    """A child run's step name as a path in its parent (children are named after their step)."""
    if name == prefix or name.startswith((f"{prefix}.", f"{prefix}[")):
        return name
    head = prefix.rsplit(".", 1)[0] if "." in prefix else ""
    return f"{head}.{name}" if head else name


def _parse(value: Any) -> datetime | None:
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def open_gates(h: RunHistory) -> list[dict[str, Any]]:
    """The gates open now, as the run publishes them, with the approvals counted so far in this
    round and who gave them (from the decisions the history recorded)."""
    raw = h.description.typed_search_attributes.get(protocol.PENDING)
    try:
        gates = json.loads(raw) if raw else []
    except ValueError:
        return []
    out = []
    for gate in gates if isinstance(gates, list) else []:
        if not isinstance(gate, dict):
            continue
        name, opened = gate.get("gate"), _parse(gate.get("opened_at"))
        approved_by: list[str] = []
        approvals = int(gate.get("approvals") or 0)
        for d in h.decisions:
            if d.decision.get("gate") != name or (opened and d.at < opened) or d.refused:
                continue
            if d.via == "update" and d.result is None:
                continue
            if d.result is not None:
                approvals = max(approvals, int(d.result.get("approvals") or 0))
            if d.decision.get("decision") == "approve" and d.decision.get("by") not in approved_by:
                approved_by.append(str(d.decision.get("by")))
        out.append({**gate, "approvals": max(approvals, len(approved_by)), "approved_by": approved_by})
    return out


async def describe_run(client: Client, run_id: str, execution: str | None = None) -> RunStatusView:
    h = await read_history(client, run_id, execution)
    records = [call_record(c) for c in h.calls] + gate_records(h.gate_notes)
    for child in h.children:  # subtasks and chats run as child workflows: their steps are this run's
        if not child.started:
            continue  # initiated but not started yet
        prefix = protocol.step_of(child.workflow_id[len(run_id) + 1 :])
        try:
            view = await describe_run(client, child.workflow_id, child.run_id)
        except EnsembleError:
            continue
        records += [s.model_copy(update={"name": _child_step_name(prefix, s.name)}) for s in view.steps]
    records.sort(key=lambda r: r.started_at or "")
    for rec in records:
        rec.summary = rec.summary or summarize(rec.output)
    _merge_pending(h, records)
    waiting = open_gates(h) if h.status == "running" else []
    return RunStatusView(
        run_id=run_id,
        flow=h.description.typed_search_attributes.get(protocol.FLOW),
        status="waiting_for_approval" if waiting else h.status,
        pending_approvals=waiting,
        steps=records,
        error=h.error,
        started_at=iso(h.description.start_time),
        ended_at=iso(h.description.close_time),
        usage=total_usage(records),
        asks_again=h.request.asks_again.model_dump() if h.request and h.request.asks_again else None,
        flow_version=h.flow_version,
    )


def _merge_pending(h: RunHistory, records: list[StepRecord]) -> None:
    """Attempts and last errors of activities still pending (retrying, or running now)."""
    latest: dict[str, StepRecord] = {}
    for rec in records:
        if rec.kind != "gate":
            latest[rec.name] = rec
    for pending in h.description.raw_description.pending_activities:
        found = latest.get(protocol.step_of(pending.activity_id))
        if found is None or found.ended_at:
            continue
        rec = found
        rec.attempts = max(rec.attempts, pending.attempt)
        if pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
            rec.status = "running"
        elif pending.attempt > 1:
            rec.status = "retrying"
        if pending.HasField("last_failure"):
            rec.error = failure_text(pending.last_failure)
