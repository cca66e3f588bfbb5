"""The dead-letter queue through the CLI, exactly as a user types it: a permanent fault sends a run
to the DLQ; `dlq list` and `dlq show` describe it; with the fault removed, `dlq redrive` resumes it
from the failed step without running again the agents that had succeeded."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys

from temporalio.client import WorkflowFailureError

from tests.conftest import ROOT, run_cli
from tests.failure_agents import rows

FLOW = """
name: {name}
imports: [tests.failure_agents]
steps:
  - name: fetch
    agent: tally
    input: {{ledger: $input.ledger, value: $input.order}}
  - name: pay
    agent: charge
    input: {{ledger: $input.ledger, amount: 5}}
  - name: notify
    agent: notify
    input: {{ledger: $input.ledger, value: $fetch.value}}
  - name: close
    agent: tally
    input: {{ledger: $input.ledger, value: done}}
output: {{order: $fetch.value, charged: $pay.charged, sent: $notify.sent}}
"""


def start_worker(dev_server, task_queue: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "worker.py"],
        cwd=ROOT,
        env=dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue, **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )


def stop(worker: subprocess.Popen) -> None:
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)


async def poll_cli(args: list[str], env: dict, until, timeout: float = 30.0):
    """Run a read command until its JSON output satisfies `until` (visibility is eventually consistent)."""
    for _ in range(int(timeout / 0.5)):
        proc = await asyncio.to_thread(run_cli, args, env)
        assert proc.returncode == 0, proc.stderr
        data = json.loads(proc.stdout)
        if until(data):
            return data
        await asyncio.sleep(0.5)
    raise AssertionError(f"{args}: condition not met; last output {data}")


def execs(ledger, run_id: str) -> list[tuple[str, str]]:
    return rows(ledger, "select step, agent from execs where run_id = ? order by id", run_id)


async def test_fault_to_dlq_then_redrive_from_the_failed_step(dev_server, task_queue, tmp_path):
    flow_name = f"dlq-{task_queue}"
    flow_file = tmp_path / "orders.flow.yaml"
    flow_file.write_text(FLOW.format(name=flow_name))
    ledger = tmp_path / "ledger.db"
    env = dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue)
    run_id = f"order-{task_queue}"

    worker = start_worker(dev_server, task_queue, ENSEMBLE_FAULTS="notify=error")
    try:
        started = run_cli(
            [
                "run",
                str(flow_file),
                "--input",
                json.dumps({"ledger": str(ledger), "order": "A-17"}),
                "--id",
                run_id,
                "--json",
            ],
            env,
        )
        assert started.returncode == 0, started.stderr
        try:
            await asyncio.wait_for(dev_server.client.get_workflow_handle(run_id).result(), timeout=60)
            raise AssertionError("the run should have failed")
        except WorkflowFailureError:
            pass
    finally:
        stop(worker)

    listed = await poll_cli(
        ["dlq", "list", "--flow", flow_name, "--json"], env, lambda d: any(e["run_id"] == run_id for e in d)
    )
    [entry] = [e for e in listed if e["run_id"] == run_id]
    assert entry["flow"] == flow_name
    assert (entry["failed_step"], entry["agent"], entry["attempts"]) == ("notify", "notify", 3)
    assert "injected fault 'error' (ENSEMBLE_FAULTS)" in entry["error"]
    assert entry["input"] == {"ledger": str(ledger), "order": "A-17"}

    shown = run_cli(["dlq", "show", run_id, "--json"], env)
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert detail["completed_steps"] == ["fetch", "pay"]
    assert detail["step_input"] == {"ledger": str(ledger), "value": "A-17"}
    assert detail["redriven_as"] is None
    human = run_cli(["dlq", "show", run_id], env)
    assert "failed step: notify" in human.stdout and "attempts: 3" in human.stdout

    # The fault is gone (a worker without ENSEMBLE_FAULTS); redrive resumes from the failed step.
    worker = start_worker(dev_server, task_queue)
    try:
        redriven = run_cli(["dlq", "redrive", run_id, "--json"], env)
        assert redriven.returncode == 0, redriven.stderr
        follow = json.loads(redriven.stdout)
        assert follow == {"run_id": f"{run_id}.redrive-1", "redrive_of": run_id, "reused": ["fetch", "pay"]}
        result = run_cli(["result", follow["run_id"], "--json"], env)
    finally:
        stop(worker)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["result"] == {"order": "A-17", "charged": 5, "sent": "A-17"}

    # fetch and pay ran once, in the failed run (the fault fails notify before it records anything);
    # the redrive ran only notify and close.
    assert execs(ledger, run_id) == [("fetch", "tally"), ("pay", "charge")]
    assert execs(ledger, follow["run_id"]) == [("notify", "notify"), ("close", "tally")]
    assert rows(ledger, "select count(*) from effects") == [(1,)]

    status = json.loads(run_cli(["status", follow["run_id"], "--json"], env).stdout)
    assert [(s["name"], s["status"]) for s in status["steps"]] == [
        ("fetch", "reused"),
        ("pay", "reused"),
        ("notify", "completed"),
        ("close", "completed"),
    ]

    # Redriven: the run leaves the queue, and cannot be redriven twice.
    await poll_cli(["dlq", "list", "--flow", flow_name, "--json"], env, lambda d: all(e["run_id"] != run_id for e in d))
    again = run_cli(["dlq", "redrive", run_id], env)
    assert again.returncode == 1
    assert (
        again.stderr.strip()
        == f"error: run '{run_id}' was already redriven as '{run_id}.redrive-1': follow that run, or redrive it if it failed"
    )
    shown = json.loads(run_cli(["dlq", "show", run_id, "--json"], env).stdout)
    assert shown["redriven_as"] == f"{run_id}.redrive-1"


async def test_dlq_commands_refuse_what_is_not_a_failed_run(dev_server, task_queue, tmp_path):
    env = dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue)
    missing = run_cli(["dlq", "show", "no-such-run"], env)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert "no run with id 'no-such-run'" in missing.stderr

    flow_file = tmp_path / "ok.flow.yaml"
    flow_file.write_text(FLOW.format(name=f"ok-{task_queue}"))
    done = run_cli(
        [
            "run",
            str(flow_file),
            "--input",
            json.dumps({"ledger": str(tmp_path / "l.db"), "order": "B"}),
            "--wait",
            "--json",
        ],
        env,
    )
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    for args in (["dlq", "show", run_id], ["dlq", "redrive", run_id]):
        refused = run_cli(args, env)
        assert refused.returncode == 1
        assert (
            refused.stderr
            == f"error: run '{run_id}' is completed, not failed: only failed runs are in the dead-letter queue\n"
        )
    usage = run_cli(["dlq", "list", "--limit", "zero"], env)
    assert usage.returncode == 2 and usage.stderr.count("\n") == 1


async def test_a_failed_subtask_lists_its_parent_run_not_the_child(dev_server, task_queue):
    from ensemble.runs import dlq
    from tests.flowkit import run_to_end
    from tests.workflows.test_hierarchical import supervised

    handle, out = await run_to_end(
        dev_server.client, task_queue, supervised(max_replans=0), {"plan": [{"id": "first", "agent": "picky"}]}
    )
    assert out is None
    child = f"{handle.id}/lead.first"
    for _ in range(60):
        letters = {d.run_id: d for d in await dlq.dead_letters(dev_server.client, limit=1000)}
        if handle.id in letters:
            break
        await asyncio.sleep(0.5)
    assert handle.id in letters and child not in letters  # the child failed too, but it is part of its parent's run
    letter = letters[handle.id]
    assert (letter.failed_step, letter.agent, letter.attempts) == (
        "lead",
        "picky",
        1,
    )  # KeyError: non-retryable for picky
    assert letter.completed_steps == ["lead.plan"]
