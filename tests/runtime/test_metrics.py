"""Prometheus metrics of a real worker process (`worker.py --metrics-port N`), scraped over HTTP
after runs: Temporal's own and Ensemble's agent latency, attempts, failures."""

from __future__ import annotations

import re
import socket

from tests.conftest import run_cli
from tests.metrics_worker import scrape_after_runs


def sample(body: str, name: str, **labels: str) -> float:
    """The value of one series: the sum over series with these labels (and any others)."""
    total, found = 0.0, False
    for line in body.splitlines():
        m = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if not m:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if all(have.get(k) == v for k, v in labels.items()):
            total, found = total + float(m.group(2)), True
    assert found, f"no {name} {labels} in the scrape"
    return total


async def test_worker_serves_temporal_and_agent_metrics(dev_server, task_queue, tmp_path):
    body = await scrape_after_runs(dev_server, task_queue, tmp_path / "worker.log", completed=2)

    q = {"task_queue": task_queue}
    # Temporal SDK metrics on the same endpoint
    assert sample(body, "temporal_activity_execution_latency_count", activity_type="shout", **q) == 2
    assert sample(body, "temporal_workflow_completed", **q) == 2
    # Ensemble's: every attempt counted and timed, with the agent and its outcome
    assert sample(body, "ensemble_agent_attempts", agent="shout", outcome="completed", **q) == 2
    assert sample(body, "ensemble_agent_attempts", agent="flaky", outcome="retrying", **q) == 2
    assert sample(body, "ensemble_agent_attempts", agent="flaky", outcome="completed", **q) == 2
    assert sample(body, "ensemble_agent_failures", agent="flaky", outcome="retrying", **q) == 2
    assert (
        sample(body, "ensemble_agent_failures", agent="picky", outcome="failed", **q) == 1
    )  # KeyError is non-retryable
    assert "ensemble_agent_failures" not in [
        line.split("{")[0] for line in body.splitlines() if 'agent="shout"' in line
    ]
    assert sample(body, "ensemble_agent_latency_count", agent="shout", **q) == 2
    assert sample(body, "ensemble_agent_latency_bucket", agent="shout", le="+Inf", **q) == 2
    assert sample(body, "ensemble_agent_latency_sum", agent="shout", **q) >= 0


def test_metrics_port_errors_are_one_line(dev_server):
    env = dev_server.env()
    bad = run_cli(["--metrics-port", "70000"], env, script="worker.py")
    assert bad.returncode == 2 and "--metrics-port" in bad.stderr and bad.stderr.count("\n") == 1
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        result = run_cli(
            ["--metrics-port", str(taken), "--metrics-host", "127.0.0.1"], env, script="worker.py", timeout=60
        )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and f"127.0.0.1:{taken}" in result.stderr and "Traceback" not in result.stderr
