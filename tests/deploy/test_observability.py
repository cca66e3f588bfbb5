"""The Grafana dashboard and the Prometheus alerts in deploy/ query metrics a real worker exports:
a worker process with `--metrics-port` runs flows (with a retry and a failure), and every metric
name the dashboard and alerts use is in its scrape (tokens need a model: that name is checked
against the worker's own constant instead)."""

from __future__ import annotations

from ensemble.runtime import telemetry
from tests.deploy.test_files import queried_metrics
from tests.metrics_worker import scrape_after_runs


async def test_every_metric_the_dashboard_and_alerts_query_is_exported(dev_server, task_queue, tmp_path):
    body = await scrape_after_runs(dev_server, task_queue, tmp_path / "worker.log", completed=1)
    exported = {line.split("{")[0].split(" ")[0] for line in body.splitlines() if line and not line.startswith("#")}
    wanted = queried_metrics() - {telemetry.TOKENS}
    assert len(wanted) >= 8
    missing = {m for m in wanted if m not in exported and f"{m}_bucket" not in exported}
    assert not missing, f"queried but not exported: {sorted(missing)}; exported: {sorted(exported)}"
