"""Record golden histories of the bundled flows: `python -m tests.histories.refresh [FLOW...]`
(all of them, or only the flows named).

Each bundled flow runs on its example input on the embedded server (or TEMPORAL_ADDRESS) with an
in-process worker, and its event history is written to `tests/histories/<flow>.json`, the JSON
form the `temporal` CLI and Web UI use. Commit the files: CI replays them against the code.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from temporalio.client import WorkflowHandle

from ensemble.authoring.flows import EXAMPLES_DIR, all_flows
from ensemble.cli.runs import read_input
from ensemble.client import check_input
from ensemble.runtime.connection import connect
from ensemble.runtime.worker import build_worker
from ensemble.spec import WORKFLOW_NAME, GateDecision, RunRequest

HERE = Path(__file__).resolve().parent


async def approve_until_done(handle: WorkflowHandle) -> None:
    """Wait for the run, approving every gate it parks at (by its approvers, up to the quorum), so
    the history records decisions too."""
    result = asyncio.ensure_future(handle.result())
    while not result.done():
        for gate in await handle.query("pending"):
            for person in gate["approvers"][: gate["quorum"] - gate["approvals"]]:
                await handle.execute_update("decide", GateDecision(gate=gate["path"], decision="approve", by=person))
        await asyncio.wait({result}, timeout=0.2)
    result.result()


def golden_id(flow: str) -> str:
    """The run id a golden history is recorded under (child workflow ids derive from it)."""
    return f"golden-{flow}"


async def main(only: list[str]) -> None:
    client = await connect()
    queue = f"golden-{uuid.uuid4().hex[:8]}"
    async with build_worker(client, queue):
        for flow in all_flows():
            if not (flow.source and EXAMPLES_DIR in flow.source.parents and flow.example_input):
                continue
            if only and flow.spec.name not in only:
                continue
            value = read_input(f"@{flow.example_input}", flow)
            check_input(value, flow)
            req = RunRequest(flow=flow.spec, agents=flow.agents, input=value, task_queue=queue)
            handle = await client.start_workflow(WORKFLOW_NAME, req, id=golden_id(flow.spec.name), task_queue=queue)
            await approve_until_done(handle)
            (HERE / f"{flow.spec.name}.json").write_text((await handle.fetch_history()).to_json())
            print(f"recorded {flow.spec.name} -> tests/histories/{flow.spec.name}.json")


if __name__ == "__main__":
    import sys

    asyncio.run(main(sys.argv[1:]))
