"""150 runs through kill -9 of the worker and then of the embedded server: none lost, no
irreversible effect twice, and the server comes back on its recorded address."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest
from temporalio.client import Client

from ensemble.runtime import server
from ensemble.runtime.converter import data_converter
from tests.conftest import DevServer, run_cli
from tests.failure_agents import rows
from tests.flowkit import request, start
from tests.test_chaos import FLOW, figures, kill, start_worker, wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.chaos]

RUNS = 150


async def test_150_runs_through_worker_and_server_kill_9(
    dev_server: DevServer, task_queue: str, tmp_path: Path, figure
) -> None:
    home, ledger = tmp_path / "home", tmp_path / "ledger.db"
    port = server.free_port()
    env = dev_server.env(ENSEMBLE_HOME=str(home), ENSEMBLE_TASK_QUEUE=task_queue)
    worker = None
    started = time.monotonic()
    try:
        up = run_cli(["server", "start"], {**env, "ENSEMBLE_SERVER_PORT": str(port)})
        assert up.returncode == 0, up.stderr
        worker = start_worker(env)
        client = await Client.connect(f"127.0.0.1:{port}", data_converter=data_converter())
        run_ids = [f"kill9-{task_queue}-{i}" for i in range(RUNS)]
        for i, run_id in enumerate(run_ids):
            await start(client, request(FLOW, {"ledger": str(ledger), "n": i, "hold": 0.5}, task_queue), run_id)
        delivered = lambda: rows(ledger, "select count(*) from deliveries")[0][0] if ledger.exists() else 0  # noqa: E731
        await wait_for(lambda: delivered() >= RUNS // 3, 120, "a third of the charges")
        kill(worker)  # the worker dies with charges in flight
        worker = start_worker(env)
        await wait_for(lambda: delivered() >= (2 * RUNS) // 3, 120, "two thirds of the charges")
        os.killpg(json.loads((home / "server.json").read_text())["pid"], signal.SIGKILL)  # then the server
        await wait_for(lambda: not server.port_open(port), 10, "server down")
        again = run_cli(["server", "start"], env)  # the recorded port, no ENSEMBLE_SERVER_PORT
        assert again.returncode == 0 and f":{port}" in again.stdout, again.stderr
        if worker.poll() is not None:
            worker = start_worker(env)
        client = await Client.connect(f"127.0.0.1:{port}", data_converter=data_converter())
        handles = [client.get_workflow_handle(r) for r in run_ids]
        outcomes = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles), return_exceptions=True), 240)
    finally:
        if worker is not None:
            kill(worker)
        run_cli(["server", "stop"], env)
    figs = figures(ledger, run_ids, outcomes)
    for key, value in figs.items():
        figure(key, value)
    figure("seconds", f"{time.monotonic() - started:.0f}")
    assert figs["lost"] == 0 and figs["completed"] == RUNS, [o for o in outcomes if isinstance(o, BaseException)][:3]
    assert figs["effects"] == RUNS and figs["duplicated_effects"] == 0
