"""What `status`, `timeline` and the inbox read back from a run's history where an audit looks:
loops of change requests, approvals counted as they come, rows in the order things happened."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import ROOT, run_cli

CONTRACT = ROOT / "examples/contract_review/contract.txt"
REQUEST = ROOT / "examples/procurement/request.json"  # a split vote: the committee (2 of dave, erin, frank) decides


@pytest.fixture
def env(dev_server, task_queue):
    return dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue)


def cli_json(args: list[str], env) -> dict:
    result = run_cli([*args, "--json"], env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def test_every_round_of_a_change_request_loop_is_on_the_record_in_order(env, tmp_path):
    run_id = cli_json(["run", "contract_review", "--input", f"@{CONTRACT}", "--wait"], env)["run_id"]
    for comment in ("explain clause 10", "and clause 11"):
        again = cli_json(["request-changes", run_id, "--gate", "legal", "--by", "bob", "--comment", comment], env)
        assert again["run"]["status"] == "waiting_for_approval"
    assert cli_json(["approve", run_id, "--gate", "legal", "--by", "alice"], env)["run"]["status"] == "completed"

    view = cli_json(["status", run_id], env)
    steps = view["steps"]
    # Rows are in the order they started, the supervisor's child steps among the parent's.
    starts = [s["started_at"] for s in steps]
    assert starts == sorted(starts)
    gates = [s for s in steps if s["kind"] == "gate"]
    assert [g["name"] for g in gates] == ["legal", "legal", "legal"]
    assert [g["output"]["decision"] for g in gates] == ["changes_requested", "changes_requested", "approved"]
    assert [[d["by"] for d in g["output"]["decisions"]] for g in gates] == [["bob"], ["bob"], ["alice"]]
    assert [g["output"]["decisions"][0]["comment"] for g in gates[:2]] == ["explain clause 10", "and clause 11"]
    # Each round's review ran once, with its own times, before that round's gate opened.
    summaries = [s for s in steps if s["agent"] == "summarizer"]
    assert len(summaries) == 3 and len({s["started_at"] for s in summaries}) == 3
    for summary, gate in zip(summaries, gates):
        assert summary["ended_at"] <= gate["started_at"]

    out = tmp_path / "loop.svg"
    drawn = run_cli(["timeline", run_id, "--out", str(out)], env)
    assert drawn.returncode == 0, drawn.stderr
    svg = out.read_text()
    assert len(re.findall(r'<g class="step gate"', svg)) == 3  # a block per round of the gate, not one
    assert len(re.findall(r'data-agent="summarizer"', svg)) == 3


async def test_pending_approvals_count_and_name_who_approved(env):
    run_id = cli_json(["run", "procurement", "--input", f"@{REQUEST}", "--wait"], env)["run_id"]
    assert cli_json(["approve", run_id, "--gate", "committee", "--by", "dave"], env)["status"] == "open"
    [gate] = cli_json(["status", run_id], env)["pending_approvals"]
    assert gate["approvals"] == 1 and gate["approved_by"] == ["dave"] and gate["quorum"] == 2
    table = run_cli(["status", run_id], env)
    assert table.returncode == 0 and "1 of 2 (dave)" in table.stdout


async def test_an_accepted_rejection_is_a_success_even_when_the_run_then_fails(env):
    run_id = cli_json(["run", "procurement", "--input", f"@{REQUEST}", "--wait"], env)["run_id"]
    rejected = run_cli(["reject", run_id, "--gate", "committee", "--by", "erin", "--comment", "too expensive"], env)
    assert rejected.returncode == 0, rejected.stderr
    assert "rejection by erin recorded" in rejected.stdout
    other = cli_json(["run", "procurement", "--input", f"@{REQUEST}", "--wait"], env)["run_id"]
    quick = run_cli(["reject", other, "--gate", "committee", "--by", "erin", "--no-wait"], env)
    assert quick.returncode == 0, quick.stderr
