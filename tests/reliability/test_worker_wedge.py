"""Workers that cannot be wedged: hung sync agents hold their own slots while other runs go on, the
worker says it is degraded, SIGTERM ends it within its grace period, and a worker whose every
agent thread is stuck exits so that its supervisor restarts it."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError

from ensemble.runtime import server
from tests.conftest import ROOT, DevServer
from tests.flowkit import request, start

pytestmark = pytest.mark.reliability

HANG = (
    "name: rel_hang_flow\nimports: [tests.reliability.agents]\nsteps:\n  - agent: rel_hang\n    input: {sleep_s: 120}\n"
)
QUICK = (
    "name: rel_quick_flow\nimports: [tests.reliability.agents]\nsteps:\n"
    "  - agent: rel_quick\n    input: {n: $input.n}\n  - name: again\n    agent: rel_quick\n    input: {n: $input.n}\n"
)


def start_worker(dev_server: DevServer, queue: str, log: Path, *args: str, **env: str) -> subprocess.Popen:
    out = open(log, "wb")  # noqa: SIM115 (the worker writes it until it exits)
    return subprocess.Popen(
        [sys.executable, "worker.py", *args],
        cwd=ROOT,
        env=dev_server.env(ENSEMBLE_TASK_QUEUE=queue, **env),
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


async def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def outcome(handle) -> str:
    try:
        await handle.result()
        return "completed"
    except WorkflowFailureError:
        return "failed"


async def test_hung_sync_agents_do_not_wedge_the_worker(
    dev_server: DevServer, task_queue: str, tmp_path: Path, figure
) -> None:
    port = server.free_port()
    log = tmp_path / "worker.log"
    proc = start_worker(
        dev_server, task_queue, log, "--health-port", str(port), "--grace-s", "5", ENSEMBLE_ACTIVITY_SLOTS="20"
    )
    client = dev_server.client
    try:
        await wait_for(lambda: health(port)[0] == 200, 60, "the worker's health endpoint")
        hung = [
            await start(client, request(HANG, {}, task_queue), f"hang-{uuid.uuid4().hex[:6]}-{i}") for i in range(10)
        ]
        await wait_for(lambda: health(port)[1]["busy"] >= 10, 30, "10 hung agents running")
        started = time.monotonic()
        quick = [
            await start(client, request(QUICK, {"n": i}, task_queue), f"quick-{uuid.uuid4().hex[:6]}-{i}")
            for i in range(50)
        ]
        results = await asyncio.wait_for(asyncio.gather(*(outcome(h) for h in quick)), 120)
        took = time.monotonic() - started
        assert results == ["completed"] * 50
        hung_results = await asyncio.wait_for(asyncio.gather(*(outcome(h) for h in hung)), 60)
        assert hung_results == ["failed"] * 10  # each ended with its timeout, not left running
        code, body = await wait_for(
            lambda: (lambda r: r if r[1]["stuck"] >= 10 else None)(health(port)), 30, "stuck threads"
        )
        assert code == 503 and body["status"] == "degraded", body
        figure("50 normal runs beside 10 hung sync agents (s)", f"{took:.1f}")
        figure("health while hung", f"{code} {body}")
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(asyncio.to_thread(proc.wait), 15)
        exited = time.monotonic() - sent
        figure("SIGTERM to exit with 10 stuck threads, grace 5 s (s)", f"{exited:.1f}")
        assert exited < 5 + 3, exited
        assert rc in (0, 1), rc
        text = log.read_text()
        assert "worker degraded" in text and "draining" in text, text[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_worker_with_every_thread_stuck_exits_for_a_restart(
    dev_server: DevServer, task_queue: str, tmp_path: Path, figure
) -> None:
    log = tmp_path / "worker.log"
    proc = start_worker(dev_server, task_queue, log, ENSEMBLE_ACTIVITY_SLOTS="2", ENSEMBLE_STUCK_EXIT_S="2")
    client = dev_server.client
    try:
        started = time.monotonic()
        for i in range(2):
            await start(client, request(HANG, {}, task_queue), f"hang-all-{uuid.uuid4().hex[:6]}-{i}")
        rc = await asyncio.wait_for(asyncio.to_thread(proc.wait), 60)
        figure("all threads stuck: worker exited after (s)", f"{time.monotonic() - started:.1f}")
        assert rc == 3, log.read_text()[-2000:]
        assert "every agent thread" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_run_wait_with_a_hung_agent_on_its_own_worker_ends(
    dev_server: DevServer, task_queue: str, tmp_path: Path, figure
) -> None:
    """`run --wait` runs a worker in-process; a hung sync agent fails the run at its timeout and
    the command returns then, not when the thread would."""
    from tests.conftest import run_cli

    flow = tmp_path / "hang.flow.yaml"
    flow.write_text(HANG.replace("rel_hang_flow", "rel_hang_cli"))
    started = time.monotonic()
    done = run_cli(
        ["run", str(flow), "--input", "{}", "--wait", "--json"],
        dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue),
        timeout=90,
    )
    took = time.monotonic() - started
    figure("run --wait with a hung agent (timeout 2 s) returned after (s)", f"{took:.1f}")
    assert done.returncode == 1, done.stderr
    outcome, _ = json.JSONDecoder().raw_decode(done.stdout)  # (Temporal's core runtime may log a line after it)
    assert outcome["status"] == "failed"
    assert took < 30, took
