"""The approvals inbox and decisions, from the client side.

`pending` lists every run waiting on people across the namespace from Temporal visibility (the
search attributes a run publishes while a gate is open), without touching the runs themselves.
Decisions go to a run as the `decide` update, whose validator refuses bad ones before anything is
written to the history.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from temporalio.client import (
    Client,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
)
from temporalio.service import RPCError, RPCStatusCode

from ensemble.identity import keys
from ensemble.logic.proofs import binding
from ensemble.runs.history import STATUS_NAMES, get_run
from ensemble.runs.live import wait_result
from ensemble.runtime import telemetry
from ensemble.spec import GROUP_PREFIX, WORKFLOW_NAME, GateDecision, GateDecisionResult
from ensemble.spec import protocol as attributes
from ensemble.spec.errors import EnsembleError, InputError

WAITING_QUERY = (
    f"WorkflowType = '{WORKFLOW_NAME}' AND ExecutionStatus = 'Running' AND {attributes.GATES.name} IS NOT NULL"
)


def _quote(value: str) -> str:
    if "'" in value or "\\" in value:
        raise InputError(f"'{value}' is not a valid user name")
    return f"'{value}'"


def waits_on(gate: dict[str, Any], approver: str, groups: Sequence[str] = ()) -> bool:
    """Whether an open gate (as `pending` lists it) waits on `approver`: named among its people,
    or (`groups`, from an identity provider's groups claim) a member of one of the tier's groups.
    The run's validator still judges the decision's proof."""
    return approver in (gate.get("approvers") or []) or any(g in (gate.get("groups") or []) for g in groups)


async def pending(client: Client, approver: str | None = None, groups: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One row per open gate: run_id, flow, gate, approvers, groups, tier, opened_at, deadline (and
    quorum, approvals so far, round), oldest first. With `approver`, only the gates waiting on them
    (see `waits_on`)."""
    query = WAITING_QUERY
    if approver:
        names = [approver, *(f"{GROUP_PREFIX}{g}" for g in groups)]
        query += f" AND {attributes.APPROVERS.name} IN ({', '.join(_quote(n) for n in names)})"
    rows: list[dict[str, Any]] = []
    async for wf in client.list_workflows(query):
        attrs = wf.typed_search_attributes
        try:
            gates = json.loads(attrs.get(attributes.PENDING) or "[]")
        except ValueError:
            gates = []
        for gate in gates:
            if approver and not waits_on(gate, approver, groups):
                continue
            rows.append({"run_id": wf.id, "flow": attrs.get(attributes.FLOW), **gate})
    return sorted(rows, key=lambda r: (r.get("opened_at") or "", r["run_id"]))


async def prove(handle: WorkflowHandle, decision: GateDecision, token: str | None = None) -> GateDecision:
    """The decision with its proof: `token` (from an identity provider, its nonce or `ensemble`
    claim binding this decision), else signed with the approver's local key when one exists. A
    gate that believes names (`identity: asserted`) gets the decision as it is."""
    if token:
        return decision.model_copy(update={"proof": token})
    try:
        open_gates = await handle.query("pending")
    except (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError):
        return decision  # the run answers for itself in the update
    gate = next((g for g in open_gates if decision.gate in (g.get("gate"), g.get("path"))), None)
    if gate is None or gate.get("identity") != "proven" or not keys.has_local_key(decision.by):
        return decision  # the validator says what is missing
    bound = binding(handle.id, gate["path"], gate["round"], gate["tier"], decision, gate.get("digest") or "")
    return decision.model_copy(update={"proof": keys.sign_local(decision.by, bound)})


async def decide(client: Client, run_id: str, decision: GateDecision, token: str | None = None) -> GateDecisionResult:
    """Send a decision (with its proof, see `prove`); EnsembleError with the run's reason when it is refused."""
    handle, desc = await get_run(client, run_id)
    status = STATUS_NAMES.get(desc.status, "running") if desc.status else "running"
    if status != "running":
        raise EnsembleError(f"run '{run_id}' is {status}: it takes no more decisions")
    decision = await prove(handle, decision, token)
    try:
        return await handle.execute_update("decide", decision, result_type=GateDecisionResult)
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        raise EnsembleError(f"refused: {getattr(cause, 'message', None) or cause}") from None
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:  # it ended between the check and the update
            raise EnsembleError(f"run '{run_id}' is no longer running: it takes no more decisions") from None
        raise


async def settle(
    client: Client, handle: WorkflowHandle, poll_s: float = 0.3, *, stop_at_gate: bool = True
) -> dict[str, Any]:
    """Wait until the run ends or (`stop_at_gate`) waits on people: the outcome (`wait_result`'s
    shape), or `{run_id, status: waiting_for_approval, pending: [...]}`. A worker must be serving
    the run for it to move on."""
    if not stop_at_gate:
        return await wait_result(client, handle.id)
    result = asyncio.ensure_future(wait_result(client, handle.id))
    try:
        while True:
            done, _ = await asyncio.wait({result}, timeout=poll_s)
            if done:
                return result.result()
            try:
                with telemetry.unsampled():  # the caller's polls, not the run's work: no spans
                    open_gates = await handle.query("pending")
            except (RPCError, WorkflowQueryFailedError, WorkflowQueryRejectedError):
                continue  # the run just ended, or no worker answered yet
            if open_gates:
                return {"run_id": handle.id, "status": "waiting_for_approval", "pending_approvals": open_gates}
    finally:
        result.cancel()
