"""Approvals through the CLI on the dev server: the inbox (visibility), decisions and refusals as a
user types them, a run parked across a worker restart, and webhook notifications."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client

from ensemble.runs.inbox import prove
from ensemble.runs.view import describe_run
from ensemble.runtime import server
from ensemble.spec import GateDecision
from tests.conftest import ROOT, run_cli, running_worker
from tests.flowkit import request, start
from tests.test_durability import start_worker

REQUEST = ROOT / "examples" / "procurement" / "request.json"  # a split vote: the committee decides


@pytest.fixture
def env(dev_server, task_queue):
    return dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue)


def cli_json(args: list[str], env) -> dict | list:
    result = run_cli([*args, "--json"], env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def inbox(
    env, run_id: str, *, approver: str | None = None, groups: tuple[str, ...] = (), present: bool = True
) -> list[dict]:
    """The run's rows in `pending --json`, once visibility shows them (or shows them gone)."""
    extra = ["--approver", approver] if approver else []
    extra += [arg for g in groups for arg in ("--group", g)]
    for _ in range(100):
        rows = [r for r in cli_json(["pending", *extra], env) if r["run_id"] == run_id]
        if bool(rows) == present:
            return rows
        await asyncio.sleep(0.3)
    raise AssertionError(f"inbox never {'listed' if present else 'cleared'} {run_id}")


def refused(args: list[str], env) -> str:
    result = run_cli(args, env)
    assert result.returncode == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


async def test_inbox_lists_a_parked_run_and_clears_when_it_is_decided(env, dev_server):
    parked = cli_json(["run", "procurement", "--input", f"@{REQUEST}", "--wait"], env)
    assert parked["status"] == "waiting_for_approval"
    run_id = parked["run_id"]
    [row] = await inbox(env, run_id)
    assert {k: row[k] for k in ("flow", "gate", "approvers", "tier")} == {
        "flow": "procurement",
        "gate": "committee",
        "approvers": ["dave", "erin", "frank"],
        "tier": 1,
    }
    assert row["opened_at"] and row["deadline"] > row["opened_at"]
    assert await inbox(env, run_id, approver="erin")
    assert not [r for r in cli_json(["pending", "--approver", "grace"], env) if r["run_id"] == run_id]  # tier 2 only

    status = cli_json(["status", run_id], env)
    assert status["status"] == "waiting_for_approval"
    assert status["pending_approvals"][0]["gate"] == "committee"
    gate_step = next(s for s in status["steps"] if s["kind"] == "gate")
    assert (gate_step["name"], gate_step["agent"], gate_step["status"]) == ("committee", "human", "waiting")

    history = dev_server.client.get_workflow_handle(run_id)
    before = len([e async for e in history.fetch_history_events()])
    assert "'mallory' is not an approver of gate 'committee'" in refused(
        ["approve", run_id, "--gate", "committee", "--by", "mallory"], env
    )
    assert "has no gate 'legal'" in refused(["approve", run_id, "--gate", "legal", "--by", "dave"], env)
    assert "does not take change requests" in refused(
        ["request-changes", run_id, "--gate", "committee", "--by", "dave", "--comment", "x"], env
    )
    first = cli_json(["approve", run_id, "--gate", "committee", "--by", "dave", "--comment", "within budget"], env)
    assert (first["status"], first["approvals"], first["quorum"]) == ("open", 1, 2)
    assert "'dave' already decided" in refused(["reject", run_id, "--gate", "committee", "--by", "dave"], env)
    events = [e async for e in history.fetch_history_events()]
    assert (
        len([e for e in events if e.HasField("workflow_execution_update_accepted_event_attributes")]) == 1
    )  # refusals left no trace
    assert len(events) > before

    done = run_cli(["reject", run_id, "--gate", "committee", "--by", "frank", "--comment", "vendor too new"], env)
    assert done.returncode == 0, done.stderr
    assert "rejection by frank recorded" in done.stdout and "completed" in done.stdout
    await inbox(env, run_id, present=False)
    result = cli_json(["result", run_id], env)["result"]
    assert result["decision"] == "reject" and "vendor too new" in result["reason"]
    assert [(d["by"], d["decision"]) for d in result["committee"]["decisions"]] == [
        ("dave", "approve"),
        ("frank", "reject"),
    ]
    steps = (await describe_run(dev_server.client, run_id)).steps
    gate = next(s for s in steps if s.kind == "gate")
    assert (gate.status, gate.error) == ("failed", "rejected by frank")
    assert "is completed: it takes no more decisions" in refused(
        ["approve", run_id, "--gate", "committee", "--by", "erin"], env
    )


async def test_decisions_on_finished_or_unknown_runs_are_refused(env):
    done = cli_json(
        ["run", "procurement", "--input", f"@{ROOT / 'examples/procurement/request_clear.json'}", "--wait"], env
    )
    assert done["status"] == "completed"
    assert "is completed: it takes no more decisions" in refused(
        ["approve", done["run_id"], "--gate", "committee", "--by", "dave"], env
    )
    assert "no run with id 'nope'" in refused(["approve", "nope", "--gate", "committee", "--by", "dave"], env)
    usage = run_cli(["request-changes", "nope", "--gate", "g", "--by", "x"], env)
    assert usage.returncode == 2 and "--comment" in usage.stderr


@pytest.mark.chaos
async def test_a_parked_run_survives_a_worker_restart_and_is_approved_through_the_cli(env, dev_server, task_queue):
    worker = start_worker(dev_server, task_queue)
    try:
        run_id = cli_json(["run", "procurement", "--input", f"@{REQUEST}"], env)["run_id"]
        await inbox(env, run_id)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        worker = start_worker(dev_server, task_queue)  # a fresh process: the run is replayed from history
        assert cli_json(["approve", run_id, "--gate", "committee", "--by", "erin"], env)["status"] == "open"
        final = cli_json(["approve", run_id, "--gate", "committee", "--by", "dave"], env)
        assert final["status"] == "approved" and final["run"]["status"] == "completed"
        assert final["run"]["result"]["decided_by"] == "purchasing committee (erin, dave)"
    finally:
        worker.kill()
        worker.wait(timeout=10)


async def test_request_changes_sends_the_contract_review_back_with_the_comment(env):
    contract = ROOT / "examples/contract_review/contract.txt"
    run_id = cli_json(["run", "contract_review", "--input", f"@{contract}", "--wait"], env)["run_id"]
    # zoe is in no approvers file: through her identity provider's group `legal` the gate waits on her
    [row] = await inbox(env, run_id, approver="zoe", groups=("finance,legal",))
    assert row["gate"] == "legal" and row["groups"] == ["legal"] and "zoe" not in row["approvers"]
    assert not [
        r for r in cli_json(["pending", "--approver", "zoe", "--group", "finance"], env) if r["run_id"] == run_id
    ]
    alone = run_cli(["pending", "--group", "legal"], env)
    assert alone.returncode == 2 and alone.stderr.strip() == (
        "error: --group needs --approver: the gates that person may decide, directly or through a group"
    )
    again = cli_json(
        ["request-changes", run_id, "--gate", "legal", "--by", "bob", "--comment", "explain clause 10"], env
    )
    assert again["run"]["status"] == "waiting_for_approval" and again["run"]["pending_approvals"][0]["round"] == 2
    done = cli_json(["approve", run_id, "--gate", "legal", "--by", "bob"], env)["run"]
    assert done["status"] == "completed"
    assert done["result"]["summary"].endswith("Revised for the reviewer's request: explain clause 10")
    assert done["result"]["legal"]["decided_by"] == "bob" and done["result"]["legal"]["round"] == 2


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []
    failures_left = 1

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if _Hook.failures_left:  # the first call fails: the notification is retried
            _Hook.failures_left -= 1
            self.send_response(503)
            self.send_header("Retry-After", "1")
        else:
            _Hook.received.append(body)
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


async def test_gate_events_are_posted_to_the_webhook_with_retries(dev_server, task_queue, monkeypatch):
    hook = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    monkeypatch.setenv("ENSEMBLE_APPROVAL_WEBHOOK", f"http://127.0.0.1:{hook.server_port}/hook")
    flow = {
        "name": "hooked",
        "imports": ["tests.agents"],
        "steps": [
            {"agent": "echo", "input": {"x": 1}},
            {"name": "ok", "gate": {"approvers": ["alice"], "show": "$echo"}},
        ],
    }
    try:
        async with running_worker(dev_server.client, task_queue):
            handle = await start(dev_server.client, request(flow, {}, task_queue))
            for _ in range(200):
                if await handle.query("pending"):
                    break
                await asyncio.sleep(0.05)
            await handle.execute_update(
                "decide", await prove(handle, GateDecision(gate="ok", decision="approve", by="alice"))
            )
            await handle.result()
    finally:
        hook.shutdown()
    # The "opened" post was retried after its 503 (Retry-After: 1), so it may arrive after "decided".
    events = {e["event"]: e for e in _Hook.received}
    assert sorted(events) == ["decided", "opened"] and len(_Hook.received) == 2
    assert all((e["gate"], e["run_id"]) == ("ok", handle.id) for e in _Hook.received)
    assert events["opened"]["show"] == {"x": 1} and events["opened"]["approvers"] == ["alice"]
    assert events["decided"]["status"] == "approved"


async def test_pending_works_on_a_server_that_has_never_seen_ensemble(dev_server, tmp_path):
    """A plain dev server without Ensemble's search attributes: they are registered on first use."""
    port = server.free_port()
    plain = subprocess.Popen(
        [
            server.temporal_binary(),
            "server",
            "start-dev",
            "--headless",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            if server.port_open(port):
                break
            await asyncio.sleep(0.1)
        env = dev_server.env(TEMPORAL_ADDRESS=f"127.0.0.1:{port}", ENSEMBLE_HOME=str(tmp_path / "unused"))
        assert cli_json(["pending"], env) == []
        client = await Client.connect(f"127.0.0.1:{port}")
        have = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace="default"))
        assert {"EnsembleGates", "EnsembleApprovers", "EnsemblePending", "EnsembleFlow"} <= set(have.custom_attributes)
    finally:
        plain.terminate()
        plain.wait(timeout=30)
