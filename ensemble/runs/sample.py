"""A bounded sample of recent run histories per flow, read from the cluster (for `upgrade-check`).

Open runs are the ones an upgrade can break (they resume on the new code when their flow
auto-upgrades, or when an operator moves them), closed runs cover the paths the code took lately.
Both are read from visibility newest first, at most `scan` of each, and grouped by flow (the
`EnsembleFlow` search attribute; the workflow type for runs without one), keeping `per_flow` of each.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from temporalio.client import Client, WorkflowHistory

from ensemble.spec import protocol


@dataclass
class SampledRun:
    flow: str
    run_id: str
    execution: str
    open: bool


def _flow_of(execution) -> str:
    flow = execution.typed_search_attributes.get(protocol.FLOW)
    return flow or execution.workflow_type


async def sample_runs(
    client: Client, workflow_types: Sequence[str], *, per_flow: int = 10, scan: int = 1000, flows: Sequence[str] = ()
) -> list[SampledRun]:
    """Up to `per_flow` open and `per_flow` closed runs of each flow, newest first."""
    types = ", ".join(f"'{t}'" for t in workflow_types)
    base = f"WorkflowType IN ({types})"
    if flows:
        base += " AND EnsembleFlow IN (" + ", ".join(f"'{f}'" for f in flows) + ")"
    picked: list[SampledRun] = []
    for is_open in (True, False):
        query = f"{base} AND ExecutionStatus {'=' if is_open else '!='} 'Running'"
        counts: dict[str, int] = {}
        seen = 0
        async for wf in client.list_workflows(query, limit=scan, page_size=min(scan, 1000)):
            seen += 1
            flow = _flow_of(wf)
            if counts.get(flow, 0) < per_flow:
                counts[flow] = counts.get(flow, 0) + 1
                picked.append(SampledRun(flow=flow, run_id=wf.id, execution=wf.run_id, open=is_open))
            if seen >= scan:
                break
    return picked


async def histories(client: Client, runs: Sequence[SampledRun]) -> AsyncIterator[tuple[SampledRun, WorkflowHistory]]:
    """Each sampled run's history as it stands now (an open run's so far)."""
    for run in runs:
        history = await client.get_workflow_handle(run.run_id, run_id=run.execution).fetch_history()
        yield run, history
