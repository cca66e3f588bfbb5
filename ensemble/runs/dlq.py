"""The dead-letter queue, redrive and fork: reading failed runs back from Temporal and starting
runs seeded with what an earlier run recorded.

The queue is Temporal's own visibility, not a second store: a run is in it while it is an
`EnsembleFlow` run (not a child) that ended `Failed` and no run carries `EnsembleRedriveOf=<its
id>`. Its details (failed step, agent, error, attempts, input) are read from its history.

Redrive and fork start a **new run** of the recorded flow, seeded (`RunRequest.reuse`) with the
recorded results of the agents that succeeded, so those agents are not run again, and with the
idempotency keys the earlier run used (`RunRequest.idempotency_keys`), so an irreversible step
that was attempted presents the same key. A step whose compensation ran is not reused: the saga
undid it, so the seeded run does it again, under a new key. See docs/failures.md for why this is
a new run and not a Temporal reset.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import asdict, dataclass, field
from datetime import timezone
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from ensemble.spec import protocol as attributes
from ensemble.spec.errors import EnsembleError, InputError
from ensemble.authoring.flows import walk_steps
from ensemble.runs.history import STATUS_NAMES, failure_text, get_run
from ensemble.spec import WORKFLOW_NAME, AgentResult, AgentStep, RunRequest

COMPENSATE = "#compensate"
FALLBACK = "#fallback"
LOCAL_ACTIVITY_MARKER = "core_local_activity"
_STEP_IN_ERROR = re.compile(r"step '([^']+)'")
# How workflows/gate.py fails a run that people rejected: final, never redriven or forked past.
_REJECTED = re.compile(r"gate '([^']+)' rejected by (.+?)(?:: (.*))?$", re.S)
_CLOSED = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: ("activity_task_completed_event_attributes", "completed"),
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: ("activity_task_failed_event_attributes", "failed"),
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: ("activity_task_timed_out_event_attributes", "timed_out"),
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: ("activity_task_canceled_event_attributes", "canceled"),
}


@dataclass
class Activity:
    """One agent call of a run, as its history recorded it."""

    activity_id: str
    agent: str
    status: str = "scheduled"  # scheduled, running, completed, failed, timed_out, canceled, reused
    attempts: int = 0
    input: Any = None
    result: dict[str, Any] | None = None  # the AgentResult, when completed
    key: str | None = None  # the idempotency key it was given
    error: str | None = None

    @property
    def step(self) -> str:
        return self.activity_id.split("#")[0]

    @property
    def compensation(self) -> bool:
        return self.activity_id.endswith(COMPENSATE)


@dataclass
class RunRecord:
    """What a run's history says about it, as far as failure handling needs."""

    run_id: str
    status: str
    request: RunRequest
    activities: list[Activity] = field(default_factory=list)  # reused ones first, then in schedule order
    failed_children: list[tuple[str, str]] = field(default_factory=list)  # (child id, error)
    error: str | None = None
    error_type: str | None = None
    ended_at: str | None = None

    def compensated(self) -> set[str]:
        """Activity ids of the steps whose compensation completed."""
        return {a.activity_id[: -len(COMPENSATE)] for a in self.activities if a.compensation and a.status == "completed"}


async def read_run(client: Client, run_id: str) -> RunRecord:
    """A run's record from its history (any status; no worker needed)."""
    _, desc = await get_run(client, run_id)
    if desc.workflow_type != WORKFLOW_NAME:
        raise InputError(f"run '{run_id}' is a {desc.workflow_type} workflow, not a flow run")
    events = [e async for e in client.get_workflow_handle(run_id).fetch_history_events()]
    [raw] = await client.data_converter.decode(events[0].workflow_execution_started_event_attributes.input.payloads)
    request = RunRequest.model_validate(raw)
    record = RunRecord(run_id=run_id, status=STATUS_NAMES.get(desc.status, "running"), request=request)
    # A reused result does not record its agent's name: the flow knows it.
    record.activities = [Activity(aid, _agent_of(request, aid), status="reused", result=r.model_dump()) for aid, r in request.reuse.items()]
    by_event: dict[int, Activity] = {}
    for event in events:
        etype = event.event_type
        if etype == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            [call] = await client.data_converter.decode(attrs.input.payloads) if attrs.input.payloads else [None]
            if not (isinstance(call, dict) and "context" in call and "agent" in call):
                continue  # the engine's own bookkeeping, not an agent
            act = Activity(attrs.activity_id, attrs.activity_type.name, input=call.get("input"))
            act.key = (call.get("context") or {}).get("idempotency_key")
            by_event[event.event_id] = act
            record.activities.append(act)
        elif etype == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs = event.activity_task_started_event_attributes
            if act := by_event.get(attrs.scheduled_event_id):
                act.status, act.attempts = "running", attrs.attempt
        elif etype in _CLOSED:
            name, status = _CLOSED[etype]
            attrs = getattr(event, name)
            act = by_event.get(attrs.scheduled_event_id)
            if act is None:
                continue
            act.status = status
            if status == "completed" and attrs.result.payloads:
                [act.result] = await client.data_converter.decode(attrs.result.payloads)
            elif status in ("failed", "timed_out"):
                act.error = failure_text(attrs.failure)
        elif etype == EventType.EVENT_TYPE_MARKER_RECORDED:
            act = await _local_activity(client, event.marker_recorded_event_attributes)
            if act is not None:
                record.activities.append(act)
        elif etype == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED:
            attrs = event.child_workflow_execution_failed_event_attributes
            record.failed_children.append((attrs.workflow_execution.workflow_id, failure_text(attrs.failure)))
        elif etype == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
            failure = event.workflow_execution_failed_event_attributes.failure
            record.error = failure_text(failure)
            record.error_type = _failure_type(failure)
            record.ended_at = event.event_time.ToDatetime().replace(tzinfo=timezone.utc).isoformat(timespec="seconds")
    for act in record.activities:  # a local activity's marker does not record its input: derive the key as the engine does
        spec = request.agents.get(act.agent)
        if act.key is None and act.status != "reused" and spec is not None and spec.effect == "irreversible":
            act.key = request.idempotency_keys.get(act.activity_id) or f"{run_id}/{act.activity_id}"
    return record


def _failure_type(failure: Any) -> str | None:
    while failure is not None:
        if failure.HasField("application_failure_info") and failure.application_failure_info.type:
            return failure.application_failure_info.type
        failure = failure.cause if failure.HasField("cause") else None
    return None


async def _local_activity(client: Client, attrs: Any) -> Activity | None:
    """A `fast` agent's call: a local activity, recorded as a marker."""
    if attrs.marker_name != LOCAL_ACTIVITY_MARKER or "data" not in attrs.details:
        return None
    try:
        [data] = await client.data_converter.decode(attrs.details["data"].payloads)
    except Exception:  # a marker this reader does not understand is not an agent call it can use
        return None
    if not isinstance(data, dict) or "activity_id" not in data:
        return None
    act = Activity(data["activity_id"], data.get("activity_type", ""), attempts=int(data.get("attempt") or 1))
    if attrs.HasField("failure"):
        act.status, act.error = "failed", failure_text(attrs.failure)
    elif "result" in attrs.details and attrs.details["result"].payloads:
        [act.result] = await client.data_converter.decode(attrs.details["result"].payloads)
        act.status = "completed"
    return act


def _agent_of(request: RunRequest, activity_id: str) -> str:
    """The agent a step's activity id ran, from the flow (agent steps and their fallbacks)."""
    base = activity_id.split("#")[0]
    last = re.sub(r"\[\d+\]$", "", base.rsplit(".", 1)[-1])
    for step in walk_steps(request.flow.steps):
        if isinstance(step, AgentStep) and step.step_name in (base, last):
            return step.fallback if FALLBACK in activity_id and step.fallback else step.agent
    return ""


# ---------------------------------------------------------------- the queue


@dataclass
class DeadLetter:
    run_id: str
    flow: str
    failed_step: str | None
    agent: str | None
    error: str | None
    attempts: int
    input: Any
    failed_at: str | None
    step_input: Any = None
    completed_steps: list[str] = field(default_factory=list)
    compensations: list[dict[str, Any]] = field(default_factory=list)
    redriven_as: str | None = None
    rejected: dict[str, Any] | None = None  # {gate, by, why, at}: people rejected the run, for good

    def brief(self) -> dict[str, Any]:
        keep = ("run_id", "flow", "failed_step", "agent", "error", "attempts", "input", "failed_at", "rejected")
        return {k: v for k, v in asdict(self).items() if k in keep}


def _failure(record: RunRecord) -> tuple[str | None, Activity | None]:
    """The step the run failed in, and the agent call that failed there (when one did)."""
    named = _STEP_IN_ERROR.search(record.error or "")
    failed = [a for a in record.activities if a.status in ("failed", "timed_out") and not a.compensation]
    if named:
        path = named.group(1)
        here = [a for a in failed if a.step == path or a.step.startswith((f"{path}.", f"{path}["))]
        if here:
            return here[-1].step, here[-1]
        return path, None
    return (failed[-1].step, failed[-1]) if failed else (None, None)


async def dead_letter(client: Client, run_id: str, *, record: RunRecord | None = None, look_up_redrive: bool = True) -> DeadLetter:
    """A failed run's dead-letter entry (refused for a run that did not fail)."""
    record = record or await read_run(client, run_id)
    if record.status != "failed":
        raise EnsembleError(f"run '{run_id}' is {record.status}, not failed: only failed runs are in the dead-letter queue")
    step, act = _failure(record)
    agent, attempts, error = (act.agent, act.attempts, act.error) if act else (None, 0, record.error)
    if act is None and record.failed_children:  # a subtask or chat failed: name its failing agent
        child_id, _ = record.failed_children[-1]
        try:
            inner = await dead_letter(client, child_id, look_up_redrive=False)
            agent, attempts = inner.agent, inner.attempts
            step = step or child_id[len(run_id) + 1 :]
        except EnsembleError:
            pass
    compensated = record.compensated()
    rejected = None
    if record.error_type == "GateRejected" and (m := _REJECTED.search(record.error or "")):
        rejected = {"gate": m.group(1), "by": m.group(2), "why": m.group(3) or "", "at": record.ended_at}
        step, agent, attempts = m.group(1), "(people)", 0
    return DeadLetter(
        run_id=run_id,
        flow=record.request.flow.name,
        failed_step=step,
        agent=agent,
        error=record.error or error,
        attempts=attempts,
        input=record.request.input,
        failed_at=record.ended_at,
        step_input=act.input if act else None,
        completed_steps=[a.activity_id for a in record.activities if a.status in ("completed", "reused") and not a.compensation
                         and a.activity_id not in compensated],  # fmt: skip
        compensations=[{"step": a.step, "agent": a.agent, "status": a.status, "error": a.error} for a in record.activities if a.compensation],
        redriven_as=await redriven_as(client, run_id) if look_up_redrive else None,
        rejected=rejected,
    )


def refuse_rejected(record: RunRecord, what: str) -> None:
    """A run people rejected is final: no redrive or fork asks its gate again."""
    if record.error_type == "GateRejected" and (m := _REJECTED.search(record.error or "")):
        why = f" ({m.group(3)})" if m.group(3) else ""
        raise EnsembleError(f"run '{record.run_id}' was rejected at gate '{m.group(1)}' by {m.group(2)}{why}: a rejection is final and "
                            f"{what} would ask again; start a new run instead (`starter.py run {record.request.flow.name} --input ...`)")  # fmt: skip


async def redriven_as(client: Client, run_id: str) -> str | None:
    query = f"{attributes.REDRIVE_OF.name} = {_quote(run_id)}"
    async for wf in client.list_workflows(query, limit=1):
        return wf.id
    return None


async def dead_letters(client: Client, *, flow: str | None = None, limit: int = 50) -> list[DeadLetter]:
    """Failed top-level flow runs that no run redrives, newest first."""
    query = f"WorkflowType = '{WORKFLOW_NAME}' AND ExecutionStatus = 'Failed' AND ParentWorkflowId IS NULL"
    if flow:
        query += f" AND {attributes.FLOW.name} = {_quote(flow)}"
    out: list[DeadLetter] = []
    batch: list[str] = []

    async def take(ids: list[str]) -> None:
        """Keep the runs of `ids` (one visibility query for their redrives) until `limit`."""
        names = ", ".join(_quote(i) for i in ids)
        redriven = {wf.typed_search_attributes.get(attributes.REDRIVE_OF)
                    async for wf in client.list_workflows(f"{attributes.REDRIVE_OF.name} IN ({names})")}  # fmt: skip
        for run_id in ids:
            if run_id in redriven or len(out) >= limit:
                continue
            try:
                out.append(await dead_letter(client, run_id, look_up_redrive=False))
            except EnsembleError:  # not a flow run this reader understands
                continue

    async for wf in client.list_workflows(query):
        if wf.status == WorkflowExecutionStatus.FAILED:
            batch.append(wf.id)
        if len(batch) >= 50:
            await take(batch)
            batch = []
            if len(out) >= limit:
                return out
    if batch:
        await take(batch)
    return out


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


# ---------------------------------------------------------------- seeded runs


def seed(record: RunRecord, upto: int | None = None) -> tuple[dict[str, AgentResult], dict[str, str]]:
    """The results to reuse and the idempotency keys to inherit from the first `upto` agent
    calls of a run (all of them when None): completed calls are reused, every attempted call
    passes on its key, and steps whose compensation ran are left out of both."""
    compensated = record.compensated()
    calls = [a for a in record.activities if not a.compensation][:upto]
    reuse = {a.activity_id: AgentResult.model_validate(a.result) for a in calls
             if a.status in ("completed", "reused") and a.result is not None and a.activity_id not in compensated}  # fmt: skip
    keys = {aid: key for aid, key in record.request.idempotency_keys.items() if aid.split(COMPENSATE)[0] not in compensated}
    for a in record.activities:
        if a.key and a.activity_id.split(COMPENSATE)[0] not in compensated:
            keys[a.activity_id] = a.key
    if upto is not None:  # a fork takes the keys of what came before its step only
        before = {a.activity_id for a in calls}
        keys = {aid: key for aid, key in keys.items() if aid.split(COMPENSATE)[0] in before}
    return reuse, keys


def matches(activity: Activity, step: str) -> bool:
    """Whether an agent call belongs to STEP: a step's name or path, or its agent's name."""
    base = activity.step
    segments = re.sub(r"\[\d+\]", "", base).split(".")
    return activity.agent == step or base == step or base.startswith((f"{step}.", f"{step}[")) or step in segments


def _step_names(request: RunRequest) -> list[str]:
    names: list[str] = []
    for step in walk_steps(request.flow.steps):
        names.append(step.step_name)
        if isinstance(step, AgentStep):
            names += [n for n in (step.agent, step.fallback) if n]
    return list(dict.fromkeys(names))


def fork_point(record: RunRecord, step: str) -> int:
    """How many of the run's agent calls come before STEP's first one."""
    calls = [a for a in record.activities if not a.compensation]
    for i, act in enumerate(calls):
        if matches(act, step):
            return i
    if step in _step_names(record.request):
        return len(calls)  # the step exists but never ran: everything recorded came before it
    known = ", ".join(_step_names(record.request))
    raise InputError(f"run '{record.run_id}' (flow '{record.request.flow.name}') has no step or agent '{step}' (steps and agents: {known})")


async def start_seeded(client: Client, request: RunRequest, run_id: str, origin_attr: Any, origin: str, summary: str) -> str:
    try:
        handle = await client.start_workflow(
            WORKFLOW_NAME,
            request,
            id=run_id,
            task_queue=request.task_queue,
            search_attributes=TypedSearchAttributes(
                [SearchAttributePair(attributes.FLOW, request.flow.name), SearchAttributePair(origin_attr, origin)]
            ),
            static_summary=summary[:200],
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        raise EnsembleError(f"a run with id '{run_id}' already exists") from None
    return handle.id


def redrive_id(run_id: str) -> str:
    """`X.redrive-1` for run X, `X.redrive-2` for `X.redrive-1`...: one redrive per failed run."""
    m = re.match(r"^(.*)\.redrive-(\d+)$", run_id)
    return f"{m.group(1)}.redrive-{int(m.group(2)) + 1}" if m else f"{run_id}.redrive-1"


async def redrive(client: Client, run_id: str) -> tuple[str, RunRequest]:
    """Resume a failed run from its failed step in a new, seeded run; its id and request."""
    record = await read_run(client, run_id)
    refuse_rejected(record, "a redrive")
    letter = await dead_letter(client, run_id, record=record)
    if letter.redriven_as:
        raise EnsembleError(f"run '{run_id}' was already redriven as '{letter.redriven_as}': follow that run, or redrive it if it failed")
    reuse, keys = seed(record)
    request = record.request.model_copy(update={"reuse": reuse, "idempotency_keys": keys, "origin": run_id})
    new_id = redrive_id(run_id)
    try:
        await start_seeded(client, request, new_id, attributes.REDRIVE_OF, run_id, f"redrive of {run_id} from step {letter.failed_step}")
    except EnsembleError:
        raise EnsembleError(f"run '{run_id}' was already redriven as '{new_id}'") from None
    return new_id, request


async def fork(client: Client, run_id: str, step: str, *, new_input: Any = None, has_input: bool = False,
               new_id: str | None = None) -> tuple[str, RunRequest]:  # fmt: skip
    """A new run that reuses what `run_id` recorded before STEP and runs from STEP on."""
    record = await read_run(client, run_id)
    refuse_rejected(record, "a fork")
    reuse, keys = seed(record, fork_point(record, step))
    update: dict[str, Any] = {"reuse": reuse, "idempotency_keys": keys, "origin": run_id}
    if has_input:
        update["input"] = new_input
    request = record.request.model_copy(update=update)
    new_id = new_id or f"{run_id}.fork-{uuid.uuid4().hex[:6]}"
    await start_seeded(client, request, new_id, attributes.FORK_OF, run_id, f"fork of {run_id} from step {step}")
    return new_id, request


def as_json(letter: DeadLetter) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(letter), default=str))


def reused_steps(started_input: Any) -> list[tuple[str, str, Any]]:
    """(step path, agent, output) of each result a seeded run was given, from its workflow input
    (for `status`); nothing for other runs."""
    if not isinstance(started_input, dict) or not started_input.get("reuse"):
        return []
    try:
        request = RunRequest.model_validate(started_input)
    except ValueError:
        return []
    return [(aid.split("#")[0], _agent_of(request, aid), result.output) for aid, result in request.reuse.items()]
