"""`starter.py fork RUN_ID --from-step STEP`: a new run reuses the recorded results of the steps
before STEP (those agents do not run again: the ledger counts executions) and runs from STEP on."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from tests.failure_agents import rows
from tests.runs.test_dlq import start_worker, stop

FLOW = """
name: {name}
imports: [tests.failure_agents]
steps:
  - name: fetch
    agent: tally
    input: {{ledger: $input.ledger, value: $input.order}}
  - name: work
    sequence:
      - name: pay
        agent: charge
        input: {{ledger: $input.ledger, amount: $input.amount}}
      - name: classify
        agent: tally
        input: {{ledger: $input.ledger, value: $input.order}}
  - name: close
    agent: tally
    input: {{ledger: $input.ledger, value: $classify.value}}
output: {{fetched: $fetch.value, charged: $pay.charged, key: $pay.key, classified: $classify.value}}
"""


@pytest.fixture
def setup(dev_server, task_queue, tmp_path):
    flow_file = tmp_path / "fork.flow.yaml"
    flow_file.write_text(FLOW.format(name=f"fork-{task_queue}"))
    ledger = str(tmp_path / "ledger.db")
    env = dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue)
    worker = start_worker(dev_server, task_queue)
    yield flow_file, ledger, env
    stop(worker)


def cli_json(args: list[str], env: dict) -> dict:
    proc = run_cli(args, env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def ran(ledger: str, run_id: str) -> list[str]:
    return [step for (step,) in rows(ledger, "select step from execs where run_id = ? order by id", run_id)]


async def test_fork_reuses_the_steps_before_and_runs_from_the_step_on(setup, dev_server):
    flow_file, ledger, env = setup
    first = cli_json(
        [
            "run",
            str(flow_file),
            "--input",
            json.dumps({"ledger": ledger, "order": "A-1", "amount": 3}),
            "--wait",
            "--json",
        ],
        env,
    )
    run_id = first["run_id"]
    assert first["result"] == {"fetched": "A-1", "charged": 3, "key": f"{run_id}/work.pay", "classified": "A-1"}

    fork = cli_json(
        [
            "fork",
            run_id,
            "--from-step",
            "classify",
            "--input",
            json.dumps({"ledger": ledger, "order": "B-2", "amount": 9}),
            "--json",
        ],
        env,
    )
    fork_id = fork["run_id"]
    assert fork_id.startswith(f"{run_id}.fork-") and fork["reused"] == ["fetch", "work.pay"]
    result = cli_json(["result", fork_id, "--json"], env)
    # fetch and pay are the recorded results (input A-1, amount 3); classify and close saw the new input.
    assert result["result"] == {"fetched": "A-1", "charged": 3, "key": f"{run_id}/work.pay", "classified": "B-2"}
    assert ran(ledger, run_id) == ["fetch", "work.pay", "work.classify", "close"]
    assert ran(ledger, fork_id) == ["work.classify", "close"]
    assert rows(ledger, "select count(*) from deliveries") == [(1,)]  # the irreversible charge happened once
    recovery = await dev_server.client.get_workflow_handle(fork_id).query("recovery")
    assert (recovery["reused"], recovery["origin"]) == (["fetch", "work.pay"], run_id)

    view = cli_json(["status", fork_id, "--json"], env)
    assert [(s["name"], s["status"]) for s in view["steps"]] == [
        ("fetch", "reused"),
        ("work.pay", "reused"),
        ("work.classify", "completed"),
        ("close", "completed"),
    ]

    # From an agent's name, or a sequence's: everything from there on runs again; an irreversible
    # step at or after STEP is a new effect of the new run, with its own key.
    by_agent = cli_json(["fork", run_id, "--from-step", "charge", "--json"], env)
    assert by_agent["reused"] == ["fetch"]
    out = cli_json(["result", by_agent["run_id"], "--json"], env)["result"]
    assert out["key"] == f"{by_agent['run_id']}/work.pay" and out["classified"] == "A-1"
    assert ran(ledger, by_agent["run_id"]) == ["work.pay", "work.classify", "close"]
    by_sequence = cli_json(["fork", run_id, "--from-step", "work", "--json"], env)
    assert by_sequence["reused"] == ["fetch"]
    # A fork of a fork reuses what the fork itself reused.
    again = cli_json(["fork", fork_id, "--from-step", "close", "--id", f"{fork_id}-again", "--json"], env)
    assert again == {
        "run_id": f"{fork_id}-again",
        "fork_of": fork_id,
        "from_step": "close",
        "reused": ["fetch", "work.pay", "work.classify"],
    }
    assert cli_json(["result", again["run_id"], "--json"], env)["result"]["classified"] == "B-2"
    assert ran(ledger, again["run_id"]) == ["close"]


async def test_fork_refuses_an_unknown_step_and_bad_input(setup, dev_server):
    flow_file, ledger, env = setup
    run_id = cli_json(
        [
            "run",
            str(flow_file),
            "--input",
            json.dumps({"ledger": ledger, "order": "C", "amount": 1}),
            "--wait",
            "--json",
        ],
        env,
    )["run_id"]
    unknown = run_cli(["fork", run_id, "--from-step", "shipping"], env)
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
    assert f"run '{run_id}' (flow 'fork-" in unknown.stderr and "has no step or agent 'shipping'" in unknown.stderr
    assert "fetch, tally, work, pay, charge, classify, close" in unknown.stderr
    bad = run_cli(["fork", run_id, "--from-step", "close", "--input", "{not json"], env)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --input is not valid JSON")
    missing = run_cli(["fork", "nope", "--from-step", "close"], env)
    assert missing.returncode == 1 and "no run with id 'nope'" in missing.stderr


COMPENSATED = """
name: {name}
imports: [tests.failure_agents]
steps:
  - {{name: hold, agent: charge, input: {{ledger: $input.ledger, amount: 1}}, compensate: undo}}
  - {{name: keep, agent: tally, input: {{ledger: $input.ledger, value: kept}}}}
  - {{name: ship, agent: explode, input: {{ledger: $input.ledger}}}}
"""


async def test_a_step_whose_compensation_ran_is_done_again_under_a_new_key(setup, tmp_path, task_queue):
    _, ledger, env = setup
    flow_file = tmp_path / "comp.flow.yaml"
    flow_file.write_text(COMPENSATED.format(name=f"comp-{task_queue}"))
    failed = run_cli(["run", str(flow_file), "--input", json.dumps({"ledger": ledger}), "--wait", "--json"], env)
    assert failed.returncode == 1
    run_id = json.loads(failed.stdout)["run_id"]
    assert rows(ledger, "select step, key from undo where run_id = ?", run_id) == [
        ("hold", f"{run_id}/hold#compensate")
    ]

    # The saga refunded `hold`: a redrive charges again (a new effect, a new key) and reuses `keep`.
    redrive = cli_json(["dlq", "redrive", run_id, "--json"], env)
    assert redrive["reused"] == ["keep"]
    proc = run_cli(["result", redrive["run_id"], "--json"], env)
    assert proc.returncode == 1  # ship still explodes
    assert rows(ledger, "select run_id, step from effects order by rowid") == [
        (run_id, "hold"),
        (redrive["run_id"], "hold"),
    ]
    assert ran(ledger, redrive["run_id"]) == ["hold", "ship", "ship", "ship"]
    # ...and its own saga refunds that new charge, under its own key.
    assert rows(ledger, "select key from undo where run_id = ?", redrive["run_id"]) == [
        (f"{redrive['run_id']}/hold#compensate",)
    ]
