"""Starting flow runs: the one place a run is started, whether new, redriven or forked."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from ensemble.runtime import telemetry, versioning
from ensemble.spec import RunRequest, protocol
from ensemble.spec.errors import EnsembleError


def without_duplicate_agents(request: RunRequest) -> RunRequest:
    """The request as the run's history records it: an agent the flow file defines travels once,
    in `agents` (every agent the run uses, resolved), not a second time in the flow's own list.
    Nothing reads the flow's copy once a run has started; an inline agent that differs from the
    resolved one, or that no step uses, stays."""
    kept = [a for a in request.flow.agents if request.agents.get(a.name) != a]
    if len(kept) == len(request.flow.agents):
        return request
    return request.model_copy(update={"flow": request.flow.model_copy(update={"agents": kept})})


async def start_request(
    client: Client,
    request: RunRequest,
    run_id: str,
    *,
    summary: str,
    origin: tuple[Any, str] | None = None,
    memo: dict[str, Any] | None = None,
) -> str:
    """Start a flow run of `request` under `run_id` (a run id names one run, ever). `origin` is a
    (search attribute, run id) pair for a run seeded from another one (redrive, fork); `memo` is
    kept on the run (`asks_again`: the rejected run a new run asks again).

    A client whose data converter has no payload store starts the run with
    `inline_limit`: the workflow then fails it with a clear reason, instead of hanging, when a
    value it would send grows past what Temporal takes inline (docs/operations.md)."""
    stored = getattr(client.data_converter, "external_storage", None) is not None
    request = request.model_copy(update={"inline_limit": None if stored else protocol.INLINE_VALUE_LIMIT})
    request = without_duplicate_agents(request)
    pairs = [SearchAttributePair(protocol.FLOW, request.flow.name)]
    if origin is not None:
        pairs.append(SearchAttributePair(origin[0], origin[1]))
    try:
        with telemetry.run_span(request.flow.name, run_id):  # the root of the run's trace
            handle = await client.start_workflow(
                protocol.FLOW_WORKFLOW,
                request,
                id=run_id,
                task_queue=request.task_queue,
                search_attributes=TypedSearchAttributes(pairs),
                static_summary=summary[:200],
                memo=memo,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                versioning_override=versioning.start_override(request.flow),  # pinned or auto-upgrade (docs/deploy.md)
            )
    except WorkflowAlreadyStartedError:
        raise EnsembleError(f"a run with id '{run_id}' already exists; choose another id") from None
    return handle.id
