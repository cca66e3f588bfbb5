"""Runs survive their worker: a worker process killed with SIGKILL mid-agent, a new one started,
and the run completes without re-running the agents that had finished."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

import pytest

from ensemble.runs.view import describe_run
from tests.conftest import ROOT
from tests.flowkit import request, start

FLOW = """
name: durable
imports: [tests.agents]
steps:
  - agent: shout
    input: {text: $input.text}
  - agent: slow
    input: {marker_dir: $input.marker_dir, seconds: 1.5}
  - agent: count
    input: {text: $shout.text}
"""


def start_worker(dev_server, task_queue: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "worker.py"],
        cwd=ROOT,
        env=dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )


async def wait_for(predicate, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.mark.chaos
async def test_run_survives_worker_killed_mid_agent(dev_server, task_queue, tmp_path):
    worker = start_worker(dev_server, task_queue)
    try:
        handle = await start(
            dev_server.client, request(FLOW, {"text": "durable", "marker_dir": str(tmp_path)}, task_queue)
        )
        await wait_for(lambda: (tmp_path / f"{handle.id}.1").exists())
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        view = await describe_run(dev_server.client, handle.id)
        assert view.status == "running"
        assert [(s.name, s.status) for s in view.steps] == [("shout", "completed"), ("slow", "running")]
        worker = start_worker(dev_server, task_queue)
        outcome = await asyncio.wait_for(handle.result(), timeout=60)
    finally:
        worker.kill()
        worker.wait(timeout=10)
    assert outcome.output["count"] == {"chars": 7, "words": 1}
    assert outcome.output["slow"]["attempt"] == 2  # the killed attempt timed out, the new worker retried
    steps = (await describe_run(dev_server.client, handle.id)).steps
    assert [(s.name, s.attempts) for s in steps] == [("shout", 1), ("slow", 2), ("count", 1)]  # shout never re-ran
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{handle.id}.1", f"{handle.id}.2"]


async def test_worker_stops_cleanly_on_sigterm(dev_server, task_queue):
    worker = start_worker(dev_server, task_queue)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(worker.stderr.readline), timeout=30)
        assert f"polling task queue '{task_queue}'".encode() in line
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 30) == 0
    finally:
        worker.kill()
