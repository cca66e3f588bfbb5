"""Chaos: real processes killed with SIGKILL mid-run (a worker; the embedded server), and the fault
injection (ENSEMBLE_FAULTS) the chaos tests and rehearsals use. Every run must complete, none may
be lost, and no irreversible effect may happen twice (the payment ledger dedupes by idempotency
key, as a payment service does, and counts every delivery)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.client import Client

from ensemble.activities.faults import FaultSpecError, parse
from ensemble.runs.view import describe_run
from ensemble.runtime import server
from ensemble.runtime.converter import data_converter
from ensemble.spec import FlowOutcome
from tests.conftest import ROOT, run_cli
from tests.failure_agents import rows
from tests.flowkit import request, run_to_end, start

RUNS = 6

# Agents defined in the flow with short timeouts, so an attempt lost with its process is retried soon.
FLOW = """
name: chaos
agents:
  - {name: quick_tally, handler: "tests.failure_agents:tally", timeout_s: 3, retry: {initial_interval_s: 0.2, backoff_coefficient: 1, max_attempts: 30}}
  - {name: quick_charge, handler: "tests.failure_agents:charge", effect: irreversible, timeout_s: 3, retry: {initial_interval_s: 0.2, backoff_coefficient: 1, max_attempts: 30}}
steps:
  - name: first
    agent: quick_tally
    input: {ledger: $input.ledger, value: $input.n}
  - name: pay
    agent: quick_charge
    input: {ledger: $input.ledger, amount: $input.n, hold: $input.hold}
  - name: last
    agent: quick_tally
    input: {ledger: $input.ledger, value: $pay.charged}
output: {n: $last.value, key: $pay.key}
"""


def start_worker(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "worker.py"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


async def wait_for(predicate, timeout: float = 30.0, what: str = "condition") -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: not met in {timeout}s")


def figures(ledger: Path, run_ids: list[str], outcomes: list) -> dict[str, int]:
    completed = [o for o in outcomes if not isinstance(o, BaseException)]
    effects = rows(ledger, "select run_id, count(*) from effects group by run_id")
    return {
        "started": len(run_ids),
        "completed": len(completed),
        "lost": len(run_ids) - len(completed),
        "effects": sum(n for _, n in effects),
        "duplicated_effects": sum(n - 1 for _, n in effects),
        "deliveries": rows(ledger, "select count(*) from deliveries")[0][0],
    }


def check(figs: dict[str, int], ledger: Path, run_ids: list[str], outcomes: list) -> None:
    assert figs["completed"] == figs["started"] == RUNS and figs["lost"] == 0, outcomes
    assert figs["effects"] == RUNS and figs["duplicated_effects"] == 0
    # Each run's charge is the one effect its key names, and every run presented one key only.
    assert sorted(r for (r,) in rows(ledger, "select run_id from effects")) == sorted(run_ids)
    assert all(n == 1 for _, n in rows(ledger, "select run_id, count(distinct key) from deliveries group by run_id"))
    assert [o.output["key"] for o in outcomes] == [f"{r}/pay" for r in run_ids]
    # The step before the crash never ran twice.
    assert rows(ledger, "select count(*), count(distinct run_id) from execs where step = 'first'") == [(RUNS, RUNS)]


@pytest.mark.chaos
async def test_worker_killed_with_agents_mid_flight(dev_server, task_queue, tmp_path):
    ledger = tmp_path / "ledger.db"
    env = dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue)
    worker = start_worker(env)
    try:
        handles = [
            await start(
                dev_server.client,
                request(FLOW, {"ledger": str(ledger), "n": i, "hold": 2}, task_queue),
                f"chaos-w-{task_queue}-{i}",
            )
            for i in range(RUNS)
        ]
        # Every charge has done its effect and is holding, mid-flight, when the worker dies.
        await wait_for(
            lambda: rows(ledger, "select count(*) from deliveries")[0][0] >= RUNS, what="all charges in flight"
        )
        kill(worker)
        worker = start_worker(env)
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(h.result() for h in handles), return_exceptions=True), timeout=60
        )
    finally:
        kill(worker)
    run_ids = [h.id for h in handles]
    figs = figures(ledger, run_ids, outcomes)
    print(f"\nchaos (worker SIGKILL): {json.dumps(figs)}")
    check(figs, ledger, run_ids, outcomes)
    assert figs["deliveries"] >= 2 * RUNS  # each charge was delivered again after the kill, and deduped


@pytest.mark.chaos
async def test_embedded_server_killed_and_restarted_on_the_same_sqlite_file(dev_server, task_queue, tmp_path):
    """A separate embedded server (its own state directory and ports), never the session's."""
    home = tmp_path / "home"
    port = server.free_port()
    env = {
        **dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue),
        "ENSEMBLE_HOME": str(home),
        "ENSEMBLE_SERVER_PORT": str(port),
        "ENSEMBLE_UI_PORT": str(server.free_port()),
    }
    ledger = tmp_path / "ledger.db"
    worker = None
    try:
        up = run_cli(["server", "start"], env)
        assert up.returncode == 0, up.stderr
        first_pid = json.loads((home / "server.json").read_text())["pid"]
        worker = start_worker(env)
        client = await Client.connect(f"127.0.0.1:{port}", data_converter=data_converter())
        run_ids = [f"chaos-s-{task_queue}-{i}" for i in range(RUNS)]
        for i, run_id in enumerate(run_ids):
            await start(client, request(FLOW, {"ledger": str(ledger), "n": i, "hold": 1.5}, task_queue), run_id)
        await wait_for(
            lambda: rows(ledger, "select count(*) from deliveries")[0][0] >= RUNS, what="all charges in flight"
        )
        os.killpg(first_pid, signal.SIGKILL)  # the server dies mid-run: charges done but not yet reported
        await wait_for(lambda: not server.port_open(port), what="server down")
        again = run_cli(["server", "start"], env)
        assert again.returncode == 0, again.stderr
        restarted = json.loads((home / "server.json").read_text())
        assert restarted["pid"] != first_pid and restarted["db"] == str(home / "temporal.db")
        if worker.poll() is not None:  # a supervisor would restart it; Temporal's client normally reconnects
            worker = start_worker(env)
        client = await Client.connect(f"127.0.0.1:{port}", data_converter=data_converter())
        handles = [client.get_workflow_handle(r, result_type=FlowOutcome) for r in run_ids]
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(h.result() for h in handles), return_exceptions=True), timeout=90
        )
    finally:
        if worker is not None:
            kill(worker)
        run_cli(["server", "stop"], env)
    figs = figures(ledger, run_ids, outcomes)
    print(f"\nchaos (server SIGKILL + restart): {json.dumps(figs)}")
    check(figs, ledger, run_ids, outcomes)


# ---------------------------------------------------------------- fault injection


def test_fault_specs_parse_and_malformed_ones_say_what_is_wrong():
    faults = parse("classifier=delay:4, compliance=error,router=timeout,x=error:2,*=delay:0.5")
    assert [(f.agent, f.kind, f.seconds, f.attempts) for f in faults.values()] == [
        ("classifier", "delay", 4.0, None),
        ("compliance", "error", 0.0, None),
        ("router", "timeout", 0.0, None),
        ("x", "error", 0.0, 2),
        ("*", "delay", 0.5, None),
    ]
    assert parse("") == {}
    for bad, message in [
        ("classifier", "'classifier' is not AGENT=FAULT"),
        ("classifier=explode", "unknown fault 'explode'"),
        ("classifier=delay", "unknown fault 'delay'"),
        ("a=error,a=timeout", "agent 'a' has two faults"),
    ]:
        with pytest.raises(FaultSpecError, match=message):
            parse(bad)


def test_a_malformed_ensemble_faults_stops_the_worker_at_start_in_one_line(dev_server, task_queue):
    proc = run_cli(
        [],
        dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue, ENSEMBLE_FAULTS="router=hang"),
        script="worker.py",
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == (
        "error: ENSEMBLE_FAULTS: 'router=hang': unknown fault 'hang' (use delay:SECONDS, error, error:N or timeout); "
        "e.g. ENSEMBLE_FAULTS='classifier=delay:4,compliance=error,router=timeout'"
    )
    assert "Traceback" not in proc.stderr


FAULTY = """
name: faulty
imports: [tests.failure_agents]
steps:
  - {name: a, agent: notify, input: {ledger: $input.ledger, value: 1}}
  - {name: b, agent: tally, input: {ledger: $input.ledger, value: 2}}
"""


async def test_injected_faults_delay_fail_and_hang_agents(dev_server, task_queue, tmp_path, monkeypatch):
    ledger = str(tmp_path / "ledger.db")
    # error:2 fails the first two attempts (retryable), then the agent runs; delay holds it up.
    monkeypatch.setenv("ENSEMBLE_FAULTS", "notify=error:2,tally=delay:1")
    handle, out = await run_to_end(dev_server.client, task_queue, FAULTY, {"ledger": ledger})
    assert out.output["a"] == {"sent": 1, "attempt": 3}
    steps = {s.name: s for s in (await describe_run(dev_server.client, handle.id)).steps}
    assert steps["a"].attempts == 3 and steps["b"].attempts == 1
    assert steps["b"].latency_ms >= 1000  # the injected delay, at least
    assert rows(ledger, "select step, attempt from execs where run_id = ? order by id", handle.id) == [
        ("a", 3),
        ("b", 1),
    ]

    # timeout: the attempt hangs until Temporal times it out (1 s for `brief`), twice; the run fails.
    monkeypatch.setenv("ENSEMBLE_FAULTS", "brief=timeout")
    handle, out = await run_to_end(
        dev_server.client, task_queue, FAULTY.replace("agent: notify", "agent: brief"), {"ledger": ledger}
    )
    assert out is None
    view = await describe_run(dev_server.client, handle.id)
    [a] = [s for s in view.steps if s.name == "a"]
    assert (a.status, a.attempts) == ("timed_out", 2)
    assert rows(ledger, "select count(*) from execs where run_id = ?", handle.id) == [
        (0,)
    ]  # the agent itself never ran

    # error (every attempt): the step exhausts its retries and the run fails, naming the fault.
    monkeypatch.setenv("ENSEMBLE_FAULTS", "notify=error")
    handle, out = await run_to_end(dev_server.client, task_queue, FAULTY, {"ledger": ledger})
    assert out is None
    view = await describe_run(dev_server.client, handle.id)
    assert "agent 'notify': injected fault 'error' (ENSEMBLE_FAULTS), attempt 3" in view.error
