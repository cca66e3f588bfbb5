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
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus

from ensemble.authoring.flows import walk_steps
from ensemble.runs.history import read_history
from ensemble.runs.recorded import Call, RunHistory
from ensemble.runtime.launch import start_request
from ensemble.spec import WORKFLOW_NAME, AgentResult, AgentStep, AskedAgain, RunRequest, protocol
from ensemble.spec import protocol as attributes
from ensemble.spec.errors import EnsembleError, InputError

_STEP_IN_ERROR = re.compile(r"step '([^']+)'")
# A step whose agent was never started (its input too large to send: workflows/engine.py).
_AGENT_IN_ERROR = re.compile(r"step '[^']+' \(agent '([^']+)'\) not started")
# How workflows/gate.py fails a run that people rejected: final, never redriven or forked past.
_REJECTED = re.compile(r"gate '([^']+)' rejected by (.+?)(?:: (.*))?$", re.S)


async def read_run(client: Client, run_id: str) -> RunHistory:
    """A flow run's history (any status; no worker needed); refused for other workflows."""
    record = await read_history(client, run_id)
    if record.workflow_type != WORKFLOW_NAME or record.request is None:
        raise InputError(f"run '{run_id}' is a {record.workflow_type} workflow, not a flow run")
    return record


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
    asked_again_as: str | None = None  # a rejected run: the latest new run that asks again (`run --again`)

    def brief(self) -> dict[str, Any]:
        keep = (
            "run_id",
            "flow",
            "failed_step",
            "agent",
            "error",
            "attempts",
            "input",
            "failed_at",
            "rejected",
            "asked_again_as",
        )
        return {k: v for k, v in asdict(self).items() if k in keep}


def _failure(record: RunHistory) -> tuple[str | None, Call | None]:
    """The step the run failed in, and the agent call that failed there (when one did)."""
    named = _STEP_IN_ERROR.search(record.error or "")
    failed = [a for a in record.calls if a.status in ("failed", "timed_out") and not a.compensation]
    if named:
        path = named.group(1)
        here = [a for a in failed if a.step == path or a.step.startswith((f"{path}.", f"{path}["))]
        if here:
            return here[-1].step, here[-1]
        return path, None
    return (failed[-1].step, failed[-1]) if failed else (None, None)


async def dead_letter(
    client: Client, run_id: str, *, record: RunHistory | None = None, look_up_redrive: bool = True
) -> DeadLetter:
    """A failed run's dead-letter entry (refused for a run that did not fail)."""
    record = record or await read_run(client, run_id)
    if record.status != "failed":
        raise EnsembleError(
            f"run '{run_id}' is {record.status}, not failed: only failed runs are in the dead-letter queue"
        )
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
    if act is None and agent is None and (named := _AGENT_IN_ERROR.search(record.error or "")):
        agent = named.group(1)
    compensated = record.compensated()
    rejected = rejection(record)
    if rejected is not None:
        step, agent, attempts = rejected["gate"], "(people)", 0
    return DeadLetter(
        run_id=run_id,
        flow=record.run_request.flow.name,
        failed_step=step,
        agent=agent,
        error=record.error or error,
        attempts=attempts,
        input=record.run_request.input,
        failed_at=record.ended_at.isoformat(timespec="seconds") if record.ended_at else None,
        step_input=act.input if act else None,
        completed_steps=[
            a.activity_id
            for a in record.calls
            if a.status in ("completed", "reused") and not a.compensation and a.activity_id not in compensated
        ],
        compensations=[
            {"step": a.step, "agent": a.agent, "status": a.status, "error": a.error}
            for a in record.calls
            if a.compensation
        ],
        redriven_as=await redriven_as(client, run_id) if look_up_redrive else None,
        rejected=rejected,
        asked_again_as=await asked_again_as(client, run_id) if look_up_redrive and rejected else None,
    )


def rejection(record: RunHistory) -> dict[str, Any] | None:
    """`{gate, by, why, at}` when people rejected the run (it failed with GateRejected), else None."""
    if record.status != "failed" or record.error_type != "GateRejected":
        return None
    m = _REJECTED.search(record.error or "")
    if m is None:
        return None
    at = record.ended_at.isoformat(timespec="seconds") if record.ended_at else None
    return {"gate": m.group(1), "by": m.group(2), "why": m.group(3) or "", "at": at}


def refuse_rejected(record: RunHistory, what: str) -> None:
    """A run people rejected is final: no redrive or fork asks its gate again."""
    rejected = rejection(record)
    if rejected is not None:
        why = f" ({rejected['why']})" if rejected["why"] else ""
        raise EnsembleError(
            f"run '{record.run_id}' was rejected at gate '{rejected['gate']}' by {rejected['by']}{why}: a rejection is "
            f"final and {what} would ask again; ask again in a new run that names it: "
            f"`starter.py run {record.run_request.flow.name} --again {record.run_id}`"
        )


async def rejected_run(client: Client, run_id: str) -> tuple[AskedAgain, RunRequest]:
    """What a new run asking again after `run_id` records, and the rejected run's request.
    Refused (InputError) for an unknown run and for a run people did not reject."""
    try:
        record = await read_run(client, run_id)
    except InputError:
        raise
    except EnsembleError as err:
        raise InputError(f"--again {run_id}: {err}") from None
    rejected = rejection(record)
    if rejected is None:
        ended = "still running" if record.status == "running" else record.status
        raise InputError(
            f"run '{run_id}' is {ended}, not rejected: --again asks again only after people rejected a run"
            + (f" (a failed run is redriven: `starter.py dlq redrive {run_id}`)" if record.status == "failed" else "")
        )
    return AskedAgain(run_id=run_id, **rejected), record.run_request


async def redriven_as(client: Client, run_id: str) -> str | None:
    query = f"{attributes.REDRIVE_OF.name} = {_quote(run_id)}"
    async for wf in client.list_workflows(query, limit=1):
        return wf.id
    return None


async def asked_again_as(client: Client, run_id: str) -> str | None:
    """The newest run that asks again after rejected run `run_id`, if one does."""
    async for wf in client.list_workflows(f"{attributes.ASKS_AGAIN.name} = {_quote(run_id)}", limit=1):
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
        redriven = {
            wf.typed_search_attributes.get(attributes.REDRIVE_OF)
            async for wf in client.list_workflows(f"{attributes.REDRIVE_OF.name} IN ({names})")
        }
        again: dict[str, str] = {}  # rejected run -> the newest run asking again (listed newest first)
        async for wf in client.list_workflows(f"{attributes.ASKS_AGAIN.name} IN ({names})"):
            again.setdefault(wf.typed_search_attributes.get(attributes.ASKS_AGAIN) or "", wf.id)
        for run_id in ids:
            if run_id in redriven or len(out) >= limit:
                continue
            try:
                letter = await dead_letter(client, run_id, look_up_redrive=False)
            except Exception:  # not a flow run this process can read (another shape, or payloads under a key it lacks)
                continue
            letter.asked_again_as = again.get(run_id) if letter.rejected else None
            out.append(letter)

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


def seed(record: RunHistory, upto: int | None = None) -> tuple[dict[str, AgentResult], dict[str, str]]:
    """The results to reuse and the idempotency keys to inherit from the first `upto` agent
    calls of a run (all of them when None): completed calls are reused, every attempted call
    passes on its key, and steps whose compensation ran are left out of both."""
    compensated = record.compensated()
    calls = [a for a in record.calls if not a.compensation][:upto]
    reuse = {
        a.activity_id: AgentResult.model_validate(a.result)
        for a in calls
        if a.status in ("completed", "reused") and a.result is not None and a.activity_id not in compensated
    }
    keys = {
        aid: key
        for aid, key in record.run_request.idempotency_keys.items()
        if aid.split(protocol.COMPENSATE_SUFFIX)[0] not in compensated
    }
    for a in record.calls:
        if a.key and a.activity_id.split(protocol.COMPENSATE_SUFFIX)[0] not in compensated:
            keys[a.activity_id] = a.key
    if upto is not None:  # a fork takes the keys of what came before its step only
        before = {a.activity_id for a in calls}
        keys = {aid: key for aid, key in keys.items() if aid.split(protocol.COMPENSATE_SUFFIX)[0] in before}
    return reuse, keys


def matches(activity: Call, step: str) -> bool:
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


def fork_point(record: RunHistory, step: str) -> int:
    """How many of the run's agent calls come before STEP's first one."""
    calls = [a for a in record.calls if not a.compensation]
    for i, act in enumerate(calls):
        if matches(act, step):
            return i
    if step in _step_names(record.run_request):
        return len(calls)  # the step exists but never ran: everything recorded came before it
    known = ", ".join(_step_names(record.run_request))
    raise InputError(
        f"run '{record.run_id}' (flow '{record.run_request.flow.name}') has no step or agent '{step}' (steps and agents: {known})"
    )


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
        raise EnsembleError(
            f"run '{run_id}' was already redriven as '{letter.redriven_as}': follow that run, or redrive it if it failed"
        )
    reuse, keys = seed(record)
    request = record.run_request.model_copy(update={"reuse": reuse, "idempotency_keys": keys, "origin": run_id})
    new_id = redrive_id(run_id)
    try:
        await start_request(
            client,
            request,
            new_id,
            origin=(attributes.REDRIVE_OF, run_id),
            summary=f"redrive of {run_id} from step {letter.failed_step}",
        )
    except EnsembleError:
        raise EnsembleError(f"run '{run_id}' was already redriven as '{new_id}'") from None
    return new_id, request


async def fork(
    client: Client, run_id: str, step: str, *, new_input: Any = None, has_input: bool = False, new_id: str | None = None
) -> tuple[str, RunRequest]:
    """A new run that reuses what `run_id` recorded before STEP and runs from STEP on."""
    record = await read_run(client, run_id)
    refuse_rejected(record, "a fork")
    reuse, keys = seed(record, fork_point(record, step))
    update: dict[str, Any] = {"reuse": reuse, "idempotency_keys": keys, "origin": run_id}
    if has_input:
        update["input"] = new_input
    request = record.run_request.model_copy(update=update)
    new_id = new_id or f"{run_id}.fork-{uuid.uuid4().hex[:6]}"
    await start_request(
        client, request, new_id, origin=(attributes.FORK_OF, run_id), summary=f"fork of {run_id} from step {step}"
    )
    return new_id, request


def as_json(letter: DeadLetter) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(letter), default=str))
