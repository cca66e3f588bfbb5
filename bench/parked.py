"""Parked runs: many runs waiting at an approval gate. The worker's memory once they are all
parked, and how long a decision takes to finish a run."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from typing import Any

from temporalio.client import Client, WorkflowHandle

from bench.agents import gate_flow
from bench.server import WorkerProcess, rss_mb
from bench.stats import summary
from ensemble.authoring.flows import parse_flow
from ensemble.spec import WORKFLOW_NAME, FlowOutcome, RunRequest
from ensemble.spec.errors import EnsembleError

DECISION = {"gate": "approve", "decision": "approve", "by": "bench", "comment": ""}


def gate_request(task_queue: str) -> RunRequest | str:
    """The parked flow's request, or why this tree cannot run it (gates not there yet)."""
    try:
        loaded = parse_flow(gate_flow(), "bench parked flow")
    except EnsembleError as err:
        return f"the approval-gate flow does not validate here ({str(err).splitlines()[0]})"
    return RunRequest(flow=loaded.spec, agents=loaded.agents, input={}, task_queue=task_queue)


async def _start_many(client: Client, req: RunRequest, count: int, concurrency: int) -> list[WorkflowHandle]:
    gate = asyncio.Semaphore(concurrency)

    async def one() -> WorkflowHandle:
        async with gate:
            return await client.start_workflow(
                WORKFLOW_NAME,
                req,
                id=f"parked-{uuid.uuid4().hex[:12]}",
                task_queue=req.task_queue,
                result_type=FlowOutcome,
            )

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def _is_parked(handle: WorkflowHandle) -> bool:
    desc = await handle.describe()
    raw = desc.raw_description
    return (
        desc.status is not None
        and desc.status.name == "RUNNING"
        and not raw.HasField("pending_workflow_task")
        and (desc.history_length or 0) > 3
    )


async def _wait_parked(handles: list[WorkflowHandle], timeout_s: float) -> None:
    """Until the newest runs and a random sample of the others have finished their first
    workflow task (each is then waiting on its gate); tasks are handed out roughly in order."""
    sample = handles[-20:] + random.sample(handles, min(30, len(handles)))
    deadline = time.monotonic() + timeout_s
    while True:
        done = await asyncio.gather(*(_is_parked(h) for h in sample))
        if all(done):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"runs did not park within {timeout_s:.0f}s")
        sample = [h for h, ok in zip(sample, done) if not ok]
        await asyncio.sleep(0.5)


async def parked_runs(
    client: Client,
    worker: WorkerProcess,
    server_pid: int,
    *,
    targets: list[int],
    decisions: int,
    start_concurrency: int = 50,
) -> dict[str, Any]:
    req = gate_request(worker.task_queue)
    if isinstance(req, str):
        return {"skipped": req}
    waiting: list[WorkflowHandle] = []
    phases = []
    for target in targets:
        t = time.perf_counter()
        waiting += await _start_many(client, req, target - len(waiting), start_concurrency)
        await _wait_parked(waiting, timeout_s=max(120.0, target / 20))
        seconds = time.perf_counter() - t
        memory = worker.rss_mb()
        server_memory = rss_mb(server_pid)
        picks = random.sample(range(len(waiting)), min(decisions, len(waiting)))
        latencies = []
        for i in sorted(picks, reverse=True):
            handle = waiting.pop(i)
            t0 = time.perf_counter()
            await handle.execute_update("decide", DECISION)
            await handle.result()
            latencies.append((time.perf_counter() - t0) * 1000)
        phases.append({
            "parked": target,
            "park_seconds": seconds,
            "worker_rss_mb": memory["rss_mb"],
            "worker_peak_mb": memory["peak_mb"],
            "server_rss_mb": server_memory["rss_mb"],
            "decide_to_complete_ms": summary(latencies),
        })  # fmt: skip
    return {"phases": phases, "worker_options": worker.options}
