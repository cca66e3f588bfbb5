"""The starter host of the multi-host test (run inside its own network namespace): starts the runs,
waits for every one to end, and writes what their histories say to a JSON file.

    python -m tests.deploy.netns_starter ADDRESS TASK_QUEUE LEDGER RUNS HOLD OUT
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from temporalio.client import Client

from ensemble.runtime.connection import ensure_search_attributes
from ensemble.runtime.converter import data_converter
from ensemble.spec import FlowOutcome
from tests.flowkit import request, start

FLOW = """
name: multihost
agents:
  - name: mh_tally
    handler: "tests.failure_agents:tally"
    timeout_s: 10
    retry: {initial_interval_s: 0.2, backoff_coefficient: 1, max_attempts: 30}
  - name: mh_charge
    handler: "tests.failure_agents:charge"
    effect: irreversible
    timeout_s: 10
    retry: {initial_interval_s: 0.2, backoff_coefficient: 1, max_attempts: 30}
steps:
  - name: first
    agent: mh_tally
    input: {ledger: $input.ledger, value: $input.n}
  - name: pay
    agent: mh_charge
    input: {ledger: $input.ledger, amount: $input.n, hold: $input.hold}
  - name: last
    agent: mh_tally
    input: {ledger: $input.ledger, value: $pay.charged}
output: {n: $last.value, key: $pay.key}
"""


async def facts(client: Client, run_id: str) -> dict:
    """Per step: the attempt that completed and who ran it; who completed each workflow task."""
    steps: dict[str, dict] = {}
    tasks: list[str] = []
    scheduled: dict[int, str] = {}
    async for e in client.get_workflow_handle(run_id).fetch_history_events():
        if e.HasField("activity_task_scheduled_event_attributes"):
            scheduled[e.event_id] = e.activity_task_scheduled_event_attributes.activity_id
        elif e.HasField("activity_task_started_event_attributes"):
            a = e.activity_task_started_event_attributes
            steps[scheduled[a.scheduled_event_id]] = {"attempt": a.attempt, "identity": a.identity}
        elif e.HasField("workflow_task_completed_event_attributes"):
            tasks.append(e.workflow_task_completed_event_attributes.identity)
    return {"steps": steps, "workflow_tasks": tasks}


async def main(address: str, task_queue: str, ledger: str, runs: int, hold: float, out: str) -> None:
    for _ in range(100):
        try:
            client = await Client.connect(address, data_converter=data_converter())
            break
        except RuntimeError:
            await asyncio.sleep(0.2)
    await ensure_search_attributes(client)
    handles = [
        await start(client, request(FLOW, {"ledger": ledger, "n": i, "hold": hold}, task_queue), f"mh-{task_queue}-{i}")
        for i in range(runs)
    ]
    Path(out + ".started").write_text("\n".join(h.id for h in handles))
    outcomes = await asyncio.wait_for(
        asyncio.gather(
            *(client.get_workflow_handle(h.id, result_type=FlowOutcome).result() for h in handles),
            return_exceptions=True,
        ),
        timeout=180,
    )
    report = {}
    for h, o in zip(handles, outcomes, strict=True):
        ok = not isinstance(o, BaseException)
        report[h.id] = {"ok": ok, "output": o.output if ok else repr(o), **await facts(client, h.id)}
    Path(out).write_text(json.dumps(report))


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], a[1], a[2], int(a[3]), float(a[4]), a[5]))
