"""`history` and `replay` through the CLI, as a user types them: export a real run's history,
replay it and the golden histories against this code, and a deliberately changed workflow that
fails replay with a report naming the run, the event and what differs."""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.conftest import ROOT, run_cli

HISTORIES = sorted((ROOT / "tests/histories").glob("*.json"))

# Workflows registered under the flow workflow's name that behave differently from the real one
# on the recorded `hello` history (greeter → analyse.word_stats → analyse.letter_stats).
CHANGED = '''
from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from ensemble.spec import RunRequest


async def agent(name: str, step: str) -> Any:
    return await workflow.execute_activity(name, {}, activity_id=step, start_to_close_timeout=timedelta(seconds=5))


@workflow.defn(name="EnsembleFlow")
class OtherSecondAgent:
    """Runs the first step as recorded, then a different agent for the second."""

    @workflow.run
    async def run(self, request: RunRequest) -> Any:
        await agent("greeter", "greeter")
        await agent("sentence_stats", "analyse.word_stats")
        return {}


@workflow.defn(name="EnsembleFlow")
class StopsEarly:
    """Returns after the first step: the recorded second step has no command to match."""

    @workflow.run
    async def run(self, request: RunRequest) -> Any:
        await agent("greeter", "greeter")
        return {}
'''


@pytest.fixture
def env(dev_server, task_queue, tmp_path):
    (tmp_path / "changed_flows.py").write_text(textwrap.dedent(CHANGED))
    environment = dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue)
    environment["PYTHONPATH"] = f"{ROOT}:{tmp_path}"
    return environment


def one_line_error(result, code: int, *needles: str) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr


def test_history_of_a_fresh_run_replays(env, tmp_path):
    ran = run_cli(["run", "hello", "--input", '{"name": "Grace"}', "--wait", "--json"], env)
    assert ran.returncode == 0, ran.stderr
    run_id = json.loads(ran.stdout)["run_id"]

    out = tmp_path / "grace.json"
    exported = run_cli(["history", run_id, "--out", str(out)], env)
    assert exported.returncode == 0, exported.stderr
    data = json.loads(out.read_text())
    types = [e["eventType"] for e in data["events"]]
    assert (
        types[0] == "EVENT_TYPE_WORKFLOW_EXECUTION_STARTED" and types[-1] == "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED"
    )
    assert f"{len(types)} events" in exported.stdout
    # the same JSON on stdout without --out
    assert json.loads(run_cli(["history", run_id], env).stdout) == data

    replayed = run_cli(["replay", str(out)], env)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert f"OK        {out} · run {run_id} · {len(types)} events replayed" in replayed.stdout
    report = json.loads(run_cli(["replay", str(out), "--json"], env).stdout)
    assert report == [
        {
            "file": str(out),
            "run_id": run_id,
            "events": len(types),
            "ok": True,
            "kind": None,
            "event_id": None,
            "event_type": None,
            "event": None,
            "message": None,
        }
    ]


def test_golden_histories_replay_through_the_cli(env):
    result = run_cli(["replay", *map(str, HISTORIES), "--json"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    reports = json.loads(result.stdout)
    assert [r["ok"] for r in reports] == [True] * len(HISTORIES)
    assert {r["run_id"] for r in reports} == {f"golden-{p.stem}" for p in HISTORIES}  # read from the histories


@pytest.mark.parametrize(
    "workflow, needle",
    [
        ("OtherSecondAgent", "does not match activity type of activity command 'sentence_stats'"),
        ("StopsEarly", ""),
    ],
)
def test_changed_workflow_fails_replay_with_a_report(env, workflow, needle):
    golden = ROOT / "tests/histories/hello.json"
    args = ["replay", str(golden), "--workflows", f"changed_flows:{workflow}"]
    human = run_cli(args, env)
    assert human.returncode == 1, human.stdout + human.stderr
    assert human.stderr == ""
    assert f"DIVERGED  {golden} · run golden-hello · nondeterminism at event 11 ActivityTaskScheduled" in human.stdout
    assert "agent 'word_stats' for step 'analyse.word_stats'" in human.stdout
    assert "1 history: 0 replayed, 1 diverged" in human.stdout

    [report] = json.loads(run_cli([*args, "--json"], env).stdout)
    assert (report["ok"], report["kind"], report["run_id"]) == (False, "nondeterminism", "golden-hello")
    assert (report["event_id"], report["event_type"]) == (11, "ActivityTaskScheduled")
    assert needle in report["message"] and "Nondeterminism" in report["message"]


def test_the_current_code_passes_where_the_changed_one_fails(env, tmp_path):
    """Several files: each gets its line; one divergence makes the exit code 1."""
    golden = ROOT / "tests/histories/hello.json"
    ok = run_cli(["replay", str(golden), str(ROOT / "tests/histories/document_pipeline.json")], env)
    assert ok.returncode == 0 and ok.stdout.count("OK ") == 2
    bad = run_cli(["replay", str(golden), str(golden), "--workflows", "changed_flows:StopsEarly"], env)
    assert bad.returncode == 1 and bad.stdout.count("DIVERGED") == 2


def test_history_and_replay_refuse_bad_input_in_one_line(env, tmp_path):
    one_line_error(run_cli(["history", "no-such-run"], env), 1, "no run with id 'no-such-run'")
    one_line_error(run_cli(["replay", str(tmp_path / "missing.json")], env), 2, "cannot read")
    (tmp_path / "notjson.json").write_text("{")
    one_line_error(run_cli(["replay", str(tmp_path / "notjson.json")], env), 2, "not JSON")
    (tmp_path / "other.json").write_text(json.dumps({"events": [], "x": 1}))
    one_line_error(run_cli(["replay", str(tmp_path / "other.json")], env), 2, "not an event history")
    golden = str(ROOT / "tests/histories/hello.json")
    one_line_error(run_cli(["replay", golden, "--workflows", "changed_flows"], env), 2, "MODULE:CLASS")
    one_line_error(run_cli(["replay", golden, "--workflows", "changed_flows:Nope"], env), 2, "cannot load")
    one_line_error(run_cli(["replay", golden, "--workflows", "json:JSONDecoder"], env), 2, "not a workflow class")
    one_line_error(run_cli(["replay", golden, golden, "--id", "x"], env), 2, "single FILE")
    one_line_error(run_cli(["replay"], env), 2, "FILE")
