"""Record golden histories of the bundled flows: `python -m tests.histories.refresh`.

Each bundled flow runs on its example input on the embedded server (or TEMPORAL_ADDRESS) with an
in-process worker, and its event history is written to `tests/histories/<flow>.json`, the JSON
form the `temporal` CLI and Web UI use. Commit the files: CI replays them against the code.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from ensemble.cli import check_input, read_input
from ensemble.client import connect
from ensemble.flows import all_flows, EXAMPLES_DIR
from ensemble.spec import WORKFLOW_NAME, RunRequest
from ensemble.worker import build_worker

HERE = Path(__file__).resolve().parent


def golden_id(flow: str) -> str:
    """The run id a golden history is recorded under (child workflow ids derive from it)."""
    return f"golden-{flow}"


async def main() -> None:
    client = await connect()
    queue = f"golden-{uuid.uuid4().hex[:8]}"
    async with build_worker(client, queue):
        for flow in all_flows():
            if not (flow.source and EXAMPLES_DIR in flow.source.parents and flow.example_input):
                continue
            value = read_input(f"@{flow.example_input}", flow)
            check_input(value, flow)
            req = RunRequest(flow=flow.spec, agents=flow.agents, input=value, task_queue=queue)
            handle = await client.start_workflow(WORKFLOW_NAME, req, id=golden_id(flow.spec.name), task_queue=queue)
            await handle.result()
            (HERE / f"{flow.spec.name}.json").write_text((await handle.fetch_history()).to_json())
            print(f"recorded {flow.spec.name} -> tests/histories/{flow.spec.name}.json")


if __name__ == "__main__":
    asyncio.run(main())
