"""The Grafana dashboard and the Prometheus alerts in deploy/ query metrics a real worker exports:
a worker process with `--metrics-port` runs flows (with a retry and a failure), and every metric
name the dashboard and alerts use is in its scrape (tokens need a model: that name is checked
against the worker's own constant instead)."""

from __future__ import annotations

import asyncio
import subprocess
import sys

from ensemble.runtime import server, telemetry
from tests.conftest import ROOT
from tests.deploy.test_files import queried_metrics
from tests.flowkit import request, start
from tests.runtime.test_metrics import FAILING, FLOW, scrape, wait_for_endpoint


async def test_every_metric_the_dashboard_and_alerts_query_is_exported(dev_server, task_queue, tmp_path):
    port = server.free_port()
    worker = subprocess.Popen(
        [sys.executable, "worker.py", "--metrics-port", str(port), "--metrics-host", "127.0.0.1"],
        cwd=ROOT,
        env=dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "worker.log").open("w"),
    )
    try:
        await wait_for_endpoint(port, worker)
        await (await start(dev_server.client, request(FLOW, {"text": "hi"}, task_queue))).result()
        failed = await start(dev_server.client, request(FAILING, {}, task_queue))
        await asyncio.gather(failed.result(), return_exceptions=True)
        exported = {
            line.split("{")[0].split(" ")[0] for line in scrape(port).splitlines() if line and not line.startswith("#")
        }
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    wanted = queried_metrics() - {telemetry.TOKENS}
    assert len(wanted) >= 8
    missing = {m for m in wanted if m not in exported and f"{m}_bucket" not in exported}
    assert not missing, f"queried but not exported: {sorted(missing)}; exported: {sorted(exported)}"
