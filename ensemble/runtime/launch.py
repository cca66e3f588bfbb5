"""Starting flow runs: the one place a run is started, whether new, redriven or forked."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from ensemble.runtime import flow_versions, telemetry, versioning
from ensemble.spec import RunRequest, protocol, versions
from ensemble.spec.errors import EnsembleError
from ensemble.spec.run import flow_version, without_duplicate_agents


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
    refs = flow_versions.enabled()  # a malformed ENSEMBLE_FLOW_REFS stops here, in one line
    pairs = [SearchAttributePair(protocol.FLOW, request.flow.name)]
    if origin is not None:
        pairs.append(SearchAttributePair(origin[0], origin[1]))
    try:
        with telemetry.run_span(request.flow.name, run_id):  # the root of the run's trace
            named = await _version_named(client, request) if refs else set()
            with versions.naming(named):
                handle = await client.start_workflow(
                    protocol.FLOW_WORKFLOW,
                    request,
                    id=run_id,
                    task_queue=request.task_queue,
                    search_attributes=TypedSearchAttributes(pairs),
                    static_summary=summary[:200],
                    memo=memo,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    # pinned or auto-upgrade (docs/deploy.md)
                    versioning_override=versioning.start_override(request.flow),
                )
    except WorkflowAlreadyStartedError:
        raise EnsembleError(f"a run with id '{run_id}' already exists; choose another id") from None
    return handle.id


async def _version_named(client: Client, request: RunRequest) -> set[str]:
    """The flow version a run of `request` names (ensemble.spec.versions): where this process knows
    it (a deployed flow found by name, or one read from its record), recorded first; none where
    the record cannot be written (the run then carries its flow)."""
    body = flow_version(request)
    if not versions.known(versions.digest(body)):
        return set()
    found = await flow_versions.record(client, body)
    return {found} if found is not None else set()
