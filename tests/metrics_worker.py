"""A worker process with a Prometheus endpoint (`worker.py --metrics-port N --metrics-host
127.0.0.1`) that has run flows, as the metrics tests need it: `metered` runs (an agent that
completes, and one that fails once then completes) and one `metered_failing` run (a non-retryable
failure); its scrape is read while it still runs, then it is stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

from ensemble.runtime import server
from tests.conftest import ROOT, DevServer
from tests.flowkit import request, start

FLOW = """
name: metered
imports: [tests.agents]
steps:
  - agent: shout
    input: {text: $input.text}
  - agent: flaky
    input: {}
"""

FAILING = """
name: metered_failing
imports: [tests.agents]
steps:
  - agent: picky
    input: {}
"""


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        assert resp.status == 200
        return resp.read().decode()


async def wait_for_endpoint(port: int, worker: subprocess.Popen) -> None:
    for _ in range(200):
        assert worker.poll() is None, "the worker exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        await asyncio.sleep(0.05)
    raise AssertionError("metrics endpoint never came up")


@contextlib.asynccontextmanager
async def metrics_worker(dev_server: DevServer, task_queue: str, log: Path) -> AsyncIterator[int]:
    """A worker process on `task_queue` serving metrics on a free loopback port (yielded), its
    stderr in `log`; stopped with SIGTERM on the way out."""
    port = server.free_port()
    worker = subprocess.Popen(
        [sys.executable, "worker.py", "--metrics-port", str(port), "--metrics-host", "127.0.0.1"],
        cwd=ROOT,
        env=dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )
    try:
        await wait_for_endpoint(port, worker)
        yield port
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)


async def scrape_after_runs(dev_server: DevServer, task_queue: str, log: Path, *, completed: int) -> str:
    """The scrape of a metrics worker after `completed` runs of FLOW and one failed run of FAILING."""
    async with metrics_worker(dev_server, task_queue, log) as port:
        for _ in range(completed):
            await (await start(dev_server.client, request(FLOW, {"text": "hi"}, task_queue))).result()
        failed = await start(dev_server.client, request(FAILING, {}, task_queue))
        await asyncio.gather(failed.result(), return_exceptions=True)
        # The client can learn that the run failed before the worker's endpoint shows it counted
        # (CI saw `temporal_workflow_failed` missing once): wait for it, for at most 10 s.
        for _ in range(100):
            body = scrape(port)
            if "temporal_workflow_failed" in body:
                break
            await asyncio.sleep(0.1)
        return body
