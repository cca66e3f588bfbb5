"""Crash cost: the process running a 5-model-call run is killed with SIGKILL at step 4, then
started again; the model server's request log says how many model calls the run paid for.

The model server itself sends the SIGKILL, at an exact moment: when the request of step 4 (`m4`:
steps 1-3 finished, step 4 in flight) or of step 5 (`m5`: steps 1-4 finished) arrives. A call in
flight when its caller dies is lost with it and must be sent again by any system, so the floor is
6 calls; every call above that is a finished call paid twice.

LangGraph's side runs in a subprocess, `python -m bench.crash langgraph --db DB --base-url URL
--run RUN`, which resumes the run's thread from its SQLite checkpoints when it has any.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from typing import Any

from bench.modelflows import langgraph_graph, model_flow
from bench.server import ROOT, WorkerProcess

STEPS = 5
MOMENTS = ("m4", "m5")  # killed when this step's request arrives: steps before it are finished
FLOOR = STEPS + 1


async def _wait_dead(proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            raise RuntimeError("the process to be killed was never killed (the model server did not see step 4)")
        await asyncio.sleep(0.05)


async def ensemble_trial(bench: Any, srv: Any, client: Any, model: Any, at: str) -> dict[str, Any]:
    from ensemble.authoring.flows import parse_flow
    from ensemble.spec import WORKFLOW_NAME, FlowOutcome, RunRequest

    env = {"env": model.worker_env()}
    first: WorkerProcess = bench.worker(srv, "ensemble", env)
    run = f"crash-ens-{uuid.uuid4().hex[:10]}"
    loaded = parse_flow(model_flow(STEPS, heartbeat_s=2), "bench crash flow")
    req = RunRequest(
        flow=loaded.spec, agents=loaded.agents, input={"run": run, "text": "x"}, task_queue=first.task_queue
    )
    model.control(kill={"pid": first.pid, "key": f"{run} {at}", "when": "received"})
    t = time.perf_counter()
    handle = await client.start_workflow(
        WORKFLOW_NAME, req, id=run, task_queue=first.task_queue, result_type=FlowOutcome
    )
    await _wait_dead(first.proc)  # type: ignore[arg-type]
    bench.retire(first)
    second = WorkerProcess(first.address, first.task_queue, "ensemble", {}, model.worker_env())
    second.start()
    bench.workers.append(second)
    outcome = await asyncio.wait_for(handle.result(), 120)
    bench.retire(second)
    status = "completed" if len(outcome.steps) == STEPS else f"ended after {outcome.steps}"
    return _count(model, run, at, status, time.perf_counter() - t)


async def langgraph_trial(model: Any, home: Any, at: str) -> dict[str, Any]:
    run = f"crash-lg-{uuid.uuid4().hex[:10]}"
    cmd = [
        sys.executable,
        "-m",
        "bench.crash",
        "langgraph",
        "--db",
        str(home / "langgraph-crash.db"),
        "--base-url",
        model.base_url,
        "--run",
        run,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    assert first.stdout is not None
    if first.stdout.readline().strip() != "ready":
        raise RuntimeError("the LangGraph crash process did not start")
    model.control(kill={"pid": first.pid, "key": f"{run} {at}", "when": "received"})
    # it waits for "go" on a file so the kill is armed before the run starts
    (home / f"{run}.go").touch()
    await _wait_dead(first)
    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, input="")
    status = "completed" if second.returncode == 0 and "done" in second.stdout else f"failed ({second.returncode})"
    return _count(model, run, at, status, time.perf_counter() - t)


def _count(model: Any, run: str, at: str, status: str, seconds: float) -> dict[str, Any]:
    calls = [k for k in model.keys() if k.startswith(run + " ")]
    return {"killed_at": at, "status": status, "model_calls": len(calls), "finished_calls_paid_twice": max(0, len(calls) - FLOOR),
            "seconds": round(seconds, 2)}  # fmt: skip


async def crash_cost(
    bench: Any, srv: Any, client: Any, model: Any, home: Any, *, trials: int, langgraph: bool
) -> dict[str, Any]:
    model.control(latency=0.3, jitter=0.0)
    out: dict[str, Any] = {"steps": STEPS, "kill_at": MOMENTS, "floor": FLOOR, "ensemble": [], "langgraph": []}
    for at in MOMENTS:
        for _ in range(trials):
            print(f"[bench crash {time.strftime('%H:%M:%S')}] kill when {at} arrives: ensemble", flush=True)
            out["ensemble"].append(await ensemble_trial(bench, srv, client, model, at))
            if langgraph:
                print(f"[bench crash {time.strftime('%H:%M:%S')}] kill when {at} arrives: langgraph", flush=True)
                out["langgraph"].append(await langgraph_trial(model, home, at))
    return out


# ---------------------------------------------------------------- the LangGraph process


async def _langgraph_main(args: argparse.Namespace) -> None:
    from pathlib import Path

    import aiosqlite
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    async with aiosqlite.connect(args.db) as conn:
        saver = AsyncSqliteSaver(conn)
        await saver.setup()
        graph = langgraph_graph(args.base_url, STEPS, saver)
        config = {"configurable": {"thread_id": args.run}}
        resume = (await graph.aget_state(config)).next
        print("ready", flush=True)
        go = Path(args.db).parent / f"{args.run}.go"
        while not go.exists():
            await asyncio.sleep(0.02)
        await graph.ainvoke(None if resume else {"run": args.run, "text": "x"}, config, durability="sync")
        print("done", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m bench.crash")
    p.add_argument("what", choices=["langgraph"])
    p.add_argument("--db", required=True)
    p.add_argument("--base-url", required=True)
    p.add_argument("--run", required=True)
    asyncio.run(_langgraph_main(p.parse_args()))
