"""The one reader of run histories. Every view of a run (status, the timeline, the dead-letter
queue, redrive and fork, the inbox, audit) is built from what `read_history` folds out of
Temporal's event history, so a run reads back the same everywhere, with no worker running and
for runs that failed.

It follows a run's chain of continued-as-new executions, decodes payloads through the client's
data converter (so an encrypted history reads back for a key holder), and keeps every round of a
loop apart: a step that ran three times is three calls, a child workflow started three times
under one id is three children, each with its own execution's run id.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle, WorkflowHistory
from temporalio.converter import DataConverter
from temporalio.service import RPCError, RPCStatusCode

from ensemble.authoring.flows import walk_steps
from ensemble.runs.recorded import Call, Child, Decision, GateNote, RunHistory, TierKeys
from ensemble.runtime import flow_versions
from ensemble.runtime.converter import decode_failure
from ensemble.spec import AgentStep, RunRequest, protocol
from ensemble.spec.errors import EnsembleError

STATUS_NAMES = {
    WorkflowExecutionStatus.RUNNING: "running",
    WorkflowExecutionStatus.COMPLETED: "completed",
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.CANCELED: "canceled",
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.TIMED_OUT: "timed_out",
    WorkflowExecutionStatus.CONTINUED_AS_NEW: "running",
}
ACTIVITY_CLOSED = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: ("activity_task_completed_event_attributes", "completed"),
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: ("activity_task_failed_event_attributes", "failed"),
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: ("activity_task_timed_out_event_attributes", "timed_out"),
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: ("activity_task_canceled_event_attributes", "canceled"),
}
_CLOSE_STATUS = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED: "completed",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED: "failed",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED: "canceled",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED: "terminated",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT: "timed_out",
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW: "running",
}
_WRAPPERS = ("activity task failed", "activity error", "child workflow execution failed")


def iso(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.isoformat(timespec="milliseconds")


def failure_text(failure: Failure) -> str:
    """A failure's message with the causes that add something, outermost first."""
    parts: list[str] = []
    current: Failure | None = decode_failure(failure)  # encrypted message and stack trace (runtime/converter.py)
    while current is not None:
        message = current.message.strip()
        if message and message.lower() not in _WRAPPERS and not any(message in p for p in parts):
            parts.append(message)
        current = current.cause if current.HasField("cause") else None
    return ": ".join(parts)


def failure_type(failure: Failure) -> str | None:
    """The application error type of a failure or of its first cause that has one."""
    current: Failure | None = failure
    while current is not None:
        if current.HasField("application_failure_info") and current.application_failure_info.type:
            return current.application_failure_info.type
        current = current.cause if current.HasField("cause") else None
    return None


async def get_run(client: Client, run_id: str, execution: str | None = None) -> tuple[WorkflowHandle, Any]:
    handle = client.get_workflow_handle(run_id, run_id=execution or None)
    try:
        return handle, await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise EnsembleError(f"no run with id '{run_id}' in namespace '{client.namespace}'") from None
        raise


async def _chain(client: Client, workflow_id: str, execution: str | None) -> list[list[Any]]:
    """The events of each execution in a run's continued-as-new chain, oldest first: from the
    given execution (the latest when None) back to the first, and on to the last (a child
    workflow is known by its first execution)."""

    async def events_of(run: str | None) -> list[Any]:
        return [e async for e in client.get_workflow_handle(workflow_id, run_id=run).fetch_history_events()]

    first = await events_of(execution or None)
    runs: list[list[Any]] = [first]
    previous = first[0].workflow_execution_started_event_attributes.continued_execution_run_id if first else ""
    while previous:
        events = await events_of(previous)
        runs.insert(0, events)
        previous = events[0].workflow_execution_started_event_attributes.continued_execution_run_id if events else ""
    last = runs[-1]
    while execution and last and last[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
        following = last[-1].workflow_execution_continued_as_new_event_attributes.new_execution_run_id
        last = await events_of(following)
        runs.append(last)
    return runs


async def _decode_one(converter: DataConverter, payloads: Any) -> Any:
    if not payloads.payloads:
        return None
    values = await converter.decode(payloads.payloads)
    return values[0] if len(values) == 1 else values


def _when(event: Any) -> datetime:
    return event.event_time.ToDatetime().replace(tzinfo=timezone.utc)


async def read_history(client: Client, run_id: str, execution: str | None = None) -> RunHistory:
    """Everything the history of `run_id` (its latest execution, or `execution`) says about it."""
    _, desc = await get_run(client, run_id, execution)
    history = RunHistory(
        run_id=run_id,
        workflow_type=desc.workflow_type,
        status=STATUS_NAMES.get(desc.status, "running") if desc.status else "running",
        description=desc,
    )
    chain = await _chain(client, run_id, execution)
    for index, events in enumerate(chain):
        await _fold(client.data_converter, history, events, first=index == 0, client=client)
    _derive_keys(history)
    return history


async def fold_history(history: WorkflowHistory, converter: DataConverter) -> RunHistory:
    """What an exported history (one execution, no server needed) says about its run."""
    events = list(history.events)
    started = events[0].workflow_execution_started_event_attributes if events else None
    folded = RunHistory(
        run_id=history.workflow_id,
        workflow_type=started.workflow_type.name if started is not None else "",
        status=_CLOSE_STATUS.get(events[-1].event_type, "running") if events else "running",
        description=None,
    )
    await _fold(converter, folded, events, first=True)
    # agent calls carry a run id only where it is not the run's own; the start event names the run
    folded.recorded_run_id = folded.recorded_run_id or (started.workflow_id if started is not None else "") or None
    _derive_keys(folded)
    return folded


async def _fold(
    converter: DataConverter, h: RunHistory, events: list[Any], *, first: bool, client: Client | None = None
) -> None:
    by_event: dict[int, Call] = {}
    keys_by_event: dict[int, TierKeys] = {}
    children: dict[int, Child] = {}
    updates: dict[str, Decision] = {}
    clock: datetime | None = None
    for event in events:
        etype, when = event.event_type, _when(event)
        if etype == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            clock = when  # what workflow.now() reads in that task
        if etype == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED and first:
            h.started_at = when
            h.raw_input = await _decode_one(converter, event.workflow_execution_started_event_attributes.input)
            if h.workflow_type == protocol.FLOW_WORKFLOW and isinstance(h.raw_input, dict):
                try:  # a run that names its flow's version: read from the version's record if need be
                    h.request = RunRequest.model_validate(await flow_versions.resolve(client, h.raw_input))
                except ValueError:
                    h.request = None
                if h.request is not None:  # a redrive or fork: the recorded results it reused
                    h.calls += [
                        Call(aid, agent_of(h.request, aid), status="reused", result=r.model_dump(), scheduled_at=when)
                        for aid, r in h.request.reuse.items()
                    ]
        elif etype == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            name = attrs.activity_type.name
            if name in protocol.GATE_ACTIVITIES:  # a gate's bookkeeping: read back as the gate
                if name == protocol.NOTIFY:
                    note = await _decode_one(converter, attrs.input)
                    if isinstance(note, dict):
                        h.gate_notes.append(GateNote(when, note))
                elif name == protocol.RESOLVE_APPROVER_KEYS:
                    spec = await _decode_one(converter, attrs.input)
                    keys_by_event[event.event_id] = TierKeys(when, spec if isinstance(spec, dict) else {})
                continue
            call_input = await _decode_one(converter, attrs.input)
            call = Call(attrs.activity_id, name, scheduled_at=when)
            if isinstance(call_input, dict):
                context = call_input.get("context") or {}
                call.input = call_input.get("input")
                h.recorded_run_id = h.recorded_run_id or context.get("run_id")
                call.key = context.get("idempotency_key")
                if call.key is None and context.get("keyed"):  # compact: derived from run and activity id
                    call.key = protocol.idempotency_key(h.run_id, attrs.activity_id)
            by_event[event.event_id] = call
            h.calls.append(call)
        elif etype == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs = event.activity_task_started_event_attributes
            if started := by_event.get(attrs.scheduled_event_id):
                started.status, started.attempts, started.attempt_started_at = "running", attrs.attempt, when
        elif etype in ACTIVITY_CLOSED:
            field_name, status = ACTIVITY_CLOSED[etype]
            attrs = getattr(event, field_name)
            resolved = keys_by_event.get(attrs.scheduled_event_id)
            if resolved is not None and status == "completed":
                resolved.trust = await _decode_one(converter, attrs.result)
                h.tier_keys.append(resolved)
            closed = by_event.get(attrs.scheduled_event_id)
            if closed is None:
                continue
            closed.status, closed.ended_at = status, when
            if status == "completed":
                closed.result = await _decode_one(converter, attrs.result)
            elif status in ("failed", "timed_out"):
                closed.error = failure_text(attrs.failure)
        elif etype == EventType.EVENT_TYPE_MARKER_RECORDED:
            local = await _local_call(converter, event.marker_recorded_event_attributes, when)
            if local is not None:
                h.calls.append(local)
        elif etype == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            children[event.event_id] = child = Child(
                event.start_child_workflow_execution_initiated_event_attributes.workflow_id
            )
            h.children.append(child)
        elif etype == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED:
            attrs = event.child_workflow_execution_started_event_attributes
            if begun := children.get(attrs.initiated_event_id):
                begun.run_id, begun.started = attrs.workflow_execution.run_id, True
        elif etype == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED:
            attrs = event.child_workflow_execution_failed_event_attributes
            if failed := children.get(attrs.initiated_event_id):
                failed.error = failure_text(attrs.failure)
        elif etype == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            attrs = event.workflow_execution_update_accepted_event_attributes
            request = attrs.accepted_request
            if request.input.name == protocol.DECIDE_UPDATE:
                value = await _decode_one(converter, request.input.args)
                updates[request.meta.update_id] = d = Decision(
                    when, "update", value if isinstance(value, dict) else {}, clock=clock
                )
                h.decisions.append(d)
        elif etype == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED:
            attrs = event.workflow_execution_update_completed_event_attributes
            if answered := updates.get(attrs.meta.update_id):
                if attrs.outcome.HasField("success"):
                    value = await _decode_one(converter, attrs.outcome.success)
                    answered.result = value if isinstance(value, dict) else None
                else:
                    answered.refused = failure_text(attrs.outcome.failure)
        elif etype == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            attrs = event.workflow_execution_signaled_event_attributes
            if attrs.signal_name == protocol.DECISION_SIGNAL:
                try:
                    value = await _decode_one(converter, attrs.input)
                except Exception:  # a malformed signal: the run dropped it too
                    continue
                h.decisions.append(Decision(when, "signal", value if isinstance(value, dict) else {}, clock=clock))
        elif etype == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
            failure = event.workflow_execution_failed_event_attributes.failure
            h.error, h.error_type, h.ended_at = failure_text(failure), failure_type(failure), when
        elif etype == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT:
            h.error, h.ended_at = "the run exceeded its execution timeout", when
        elif etype in (
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
        ):
            h.ended_at = when


async def _local_call(converter: DataConverter, attrs: Any, when: datetime) -> Call | None:
    """A `fast` agent's call from its local-activity marker: id, type, attempt, when its workflow
    task recorded it and its result (or failure). Temporal records no start time for it."""
    if attrs.marker_name != protocol.LOCAL_ACTIVITY_MARKER or "data" not in attrs.details:
        return None
    try:
        data = await _decode_one(converter, attrs.details["data"])
    except Exception:  # a marker this reader does not understand is not an agent call
        return None
    if not isinstance(data, dict) or "activity_id" not in data:
        return None
    call = Call(
        str(data["activity_id"]),
        str(data.get("activity_type") or "?"),
        status="completed",
        attempts=int(data.get("attempt") or 1),
        scheduled_at=when,
        ended_at=when,
        local=True,
    )
    if attrs.HasField("failure"):
        call.status, call.error = "failed", failure_text(attrs.failure)
    elif "result" in attrs.details:
        call.result = await _decode_one(converter, attrs.details["result"])
    return call


def agent_of(request: RunRequest, activity_id: str) -> str:
    """The agent a step's activity id ran, from the flow (agent steps and their fallbacks)."""
    base = protocol.step_of(activity_id)
    last = base.rsplit(".", 1)[-1].split("[")[0]
    for step in walk_steps(request.flow.steps):
        if isinstance(step, AgentStep) and step.step_name in (base, last):
            return step.fallback if protocol.FALLBACK_SUFFIX in activity_id and step.fallback else step.agent
    return ""


def _derive_keys(h: RunHistory) -> None:
    """A local activity's marker does not record its input: derive its key as the engine does."""
    if h.request is None:
        return
    for call in h.calls:
        spec = h.request.agents.get(call.agent)
        irreversible = spec is not None and (
            spec.effect == "irreversible" or any(t.effect == "irreversible" for t in spec.tool_specs)
        )
        if call.key is None and call.status != "reused" and irreversible:
            call.key = h.request.idempotency_keys.get(call.activity_id) or protocol.idempotency_key(
                h.run_id, call.activity_id
            )
