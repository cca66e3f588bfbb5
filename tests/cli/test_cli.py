"""The CLI as a user types it: `python starter.py ...` in a subprocess against the dev server."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ensemble.runtime.server import free_port
from tests.conftest import ROOT, run_cli

DOCS = ROOT / "examples" / "document_pipeline" / "documents"


def ok(result) -> dict | list:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def refused(result, code: int, *needles: str) -> str:
    """One line on stderr, the given exit code, no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def env(dev_server, task_queue):
    return dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue)


def test_server_status_reports_the_embedded_server(dev_server, env):
    out = ok(run_cli(["server", "status", "--json"], env))
    assert out["running"] is True
    assert out["address"] == dev_server.info.address
    assert out["ui"] == dev_server.info.ui_url
    text = run_cli(["server", "status"], env)
    assert text.returncode == 0 and dev_server.info.ui_url in text.stdout
    start = run_cli(["server", "start"], env)  # already running: reused, not restarted
    assert start.returncode == 0 and f"pid {dev_server.info.pid}" in start.stdout


def test_flows_json_lists_bundled_flows(env):
    flows = {f["name"]: f for f in ok(run_cli(["flows", "--json"], env))}
    dp = flows["document_pipeline"]
    assert dp["agents"] == ["extractor", "classifier", "router"]
    assert dp["patterns"] == ["sequential"]
    assert dp["example_input"] == "examples/document_pipeline/documents/invoice.txt"
    assert (ROOT / dp["example_input"]).exists()


@pytest.mark.parametrize(
    "document, label, queue",
    [
        ("invoice.txt", "invoice", "accounts-payable"),
        ("hr_request.txt", "hr_request", "people-ops"),
        ("memo.txt", "other", "triage"),
    ],
)
def test_run_wait_json_with_a_plain_text_document(env, document, label, queue):
    out = ok(run_cli(["run", "document_pipeline", "--input", f"@{DOCS / document}", "--wait", "--json"], env))
    assert out["status"] == "completed"
    assert out["result"]["classification"] == label
    assert out["result"]["route"]["queue"] == queue
    assert out["run_id"].startswith("document_pipeline-")


def test_run_then_status_and_result(env):
    run = ok(
        run_cli(
            [
                "run",
                "document_pipeline",
                "--input",
                f"@{ROOT / 'examples/document_pipeline/input.json'}",
                "--id",
                "cli-run-1",
                "--json",
            ],
            env,
        )
    )
    assert run["run_id"] == "cli-run-1"
    result = ok(run_cli(["result", "cli-run-1", "--json"], env))  # no worker polls: result runs one
    assert result["status"] == "completed"
    assert result["result"]["classification"] == "invoice"
    assert result["result"]["fields"]["invoice_number"]
    status = ok(run_cli(["status", "cli-run-1", "--json"], env))
    assert status["run_id"] == "cli-run-1" and status["flow"] == "document_pipeline" and status["status"] == "completed"
    assert [(s["name"], s["agent"], s["status"], s["attempts"]) for s in status["steps"]] == [
        ("extractor", "extractor", "completed", 1),
        ("classifier", "classifier", "completed", 1),
        ("router", "router", "completed", 1),
    ]
    assert status["steps"][1]["output"]["label"] == "invoice"
    assert all(s["started_at"] and s["ended_at"] and s["latency_ms"] is not None for s in status["steps"])
    assert status["pending_approvals"] == []
    table = run_cli(["status", "cli-run-1"], env)
    assert table.returncode == 0 and "classifier" in table.stdout and "completed" in table.stdout
    again = run_cli(["run", "document_pipeline", "--input", '{"text": "x"}', "--id", "cli-run-1"], env)
    refused(again, 1, "a run with id 'cli-run-1' already exists")


def test_failed_run_exits_1_with_its_error(env, tmp_path):
    flow = tmp_path / "fails.flow.yaml"
    flow.write_text("name: fails\nimports: [tests.agents]\nsteps:\n  - agent: broken\n")
    result = run_cli(["run", str(flow), "--input", "{}", "--wait", "--json"], env)
    assert result.returncode == 1
    out = json.loads(result.stdout)
    assert out["status"] == "failed" and out["result"] is None
    assert "the ledger is unbalanced" in out["error"]


def test_validate(env, tmp_path):
    good = run_cli(["validate", "examples/document_pipeline/flow.yaml"], env)
    assert good.returncode == 0 and "valid flow 'document_pipeline'" in good.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nimports: [tests.agents]\nsteps:\n  - agent: shout\n  - agent: nobody\n")
    refused(run_cli(["validate", "--import", str(bad)], env), 2, f"{bad}:5: steps[1].agent: unknown agent 'nobody'")
    # Without --import nothing is imported, so agents that may come from the imports are not checked.
    unchecked = run_cli(["validate", str(bad)], env)
    assert unchecked.returncode == 0 and "not checked" in unchecked.stdout and "'nobody'" in unchecked.stdout


@pytest.mark.parametrize(
    "args, code, needles",
    [
        (["run", "no_such_flow", "--input", "{}"], 2, ["unknown flow 'no_such_flow'", "document_pipeline"]),
        (["run", "document_pipeline", "--input", "{not json"], 2, ["--input is not valid JSON"]),
        (
            ["run", "document_pipeline", "--input", '{"txt": "hello"}'],
            2,
            ["input does not match flow 'document_pipeline'", "'text' is a required property"],
        ),
        (["run", "document_pipeline", "--input", '{"text": ""}'], 2, ["at text:"]),
        (
            ["run", "document_pipeline", "--input", "@/no/such/file.json"],
            2,
            ["cannot read input file /no/such/file.json"],
        ),
        (["run", "document_pipeline"], 2, ["needs --input", "examples/document_pipeline/documents/invoice.txt"]),
        (["run", "no/such/flow.yaml", "--input", "{}"], 2, ["flow file not found: no/such/flow.yaml"]),
        (["status", "no-such-run"], 1, ["no run with id 'no-such-run'"]),
        (["result", "no-such-run"], 1, ["no run with id 'no-such-run'"]),
        (["frobnicate"], 2, ["invalid choice: 'frobnicate'"]),
        (["run", "--wait"], 2, ["the following arguments are required: flow"]),
    ],
)
def test_bad_input_gets_one_line_and_nonzero_exit(env, args, code, needles):
    refused(run_cli(args, env), code, *needles)


def test_malformed_and_invalid_flow_files(env, tmp_path):
    malformed = tmp_path / "m.yaml"
    malformed.write_text("name: m\nsteps: [\n")
    refused(run_cli(["run", str(malformed), "--input", "{}"], env), 2, f"{malformed}:3: not valid YAML")
    invalid = tmp_path / "i.json"
    invalid.write_text('{"name": "i", "steps": [{"agent": "x", "retries": 3}]}')
    refused(run_cli(["validate", str(invalid)], env), 2, "steps[0].retries: Extra inputs are not permitted")


def test_plain_text_input_needs_a_document_flow(env, tmp_path):
    flow = tmp_path / "nodoc.flow.yaml"
    flow.write_text("name: nodoc\nimports: [tests.agents]\nsteps:\n  - agent: echo\n")
    doc = tmp_path / "note.txt"
    doc.write_text("hello")
    refused(run_cli(["run", str(flow), "--input", f"@{doc}"], env), 2, "does not take a plain-text document")


def test_oversize_input_is_refused_before_starting(env, tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("word " * 500_000)
    # without a payload store a run's input must fit inline; with one, ENSEMBLE_MAX_INPUT_MB bounds it
    refused(
        run_cli(["run", "document_pipeline", "--input", f"@{big}"], {**env, "ENSEMBLE_PAYLOAD_STORE": "off"}),
        2,
        "must stay under 0.5 MiB",
        "payload store",
    )
    refused(
        run_cli(["run", "document_pipeline", "--input", f"@{big}"], {**env, "ENSEMBLE_MAX_INPUT_MB": "1"}),
        2,
        "must stay under 1.0 MiB",
    )


def test_unreachable_server(env):
    env = {**env, "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}"}
    refused(run_cli(["status", "x"], env), 1, "cannot reach Temporal at 127.0.0.1:", "connection refused")
    refused(run_cli(["run", "document_pipeline", "--input", '{"text": "x"}'], env), 1, "cannot reach Temporal")
    refused(run_cli(["server", "start"], env), 2, "TEMPORAL_ADDRESS is set")


def test_worker_with_unreachable_server_exits_cleanly(env):
    env = {**env, "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}"}
    refused(run_cli([], env, script="worker.py"), 1, "cannot reach Temporal")


def test_worker_with_a_malformed_setting_exits_in_one_line(env):
    bad = {**env, "ENSEMBLE_LLM_MAX_CONNECTIONS": "lots"}
    refused(run_cli([], bad, script="worker.py"), 2, "ENSEMBLE_LLM_MAX_CONNECTIONS='lots' is not a positive number")


def test_validate_lists_every_problem(env, tmp_path):
    bad = tmp_path / "two.yaml"
    bad.write_text(
        "name: two\nimports: [tests.agents]\nsteps:\n  - agent: nobody\n  - agent: shout\n    output: input\n"
    )
    result = run_cli(["validate", "--import", str(bad)], env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"error: {bad}:4: steps[0].agent: unknown agent 'nobody'")
    assert lines[1].startswith(f"  also: {bad}:6: steps[1].output: state key 'input' is the run's input and read-only")


def test_temporal_address_uses_that_server_and_starts_nothing(dev_server, task_queue, tmp_path):
    """The dev server stands in for a cluster; the state directory must stay empty."""
    home = tmp_path / "unused-home"
    env = dev_server.env(
        ENSEMBLE_TASK_QUEUE=task_queue,
        ENSEMBLE_HOME=str(home),
        TEMPORAL_ADDRESS=dev_server.info.address,
        TEMPORAL_NAMESPACE="default",
    )
    out = ok(
        run_cli(["run", "document_pipeline", "--input", f"@{DOCS / 'purchase_order.txt'}", "--wait", "--json"], env)
    )
    assert out["status"] == "completed" and out["result"]["classification"] == "purchase_order"
    assert not home.exists()
    status = ok(run_cli(["status", out["run_id"], "--json"], env))
    assert status["flow"] == "document_pipeline"


def test_a_stopped_server_that_a_command_starts_again_is_announced(dev_server, tmp_path):
    home = tmp_path / "home"
    env = dev_server.env(
        ENSEMBLE_HOME=str(home), ENSEMBLE_SERVER_PORT=str(free_port()), ENSEMBLE_UI_PORT=str(free_port())
    )
    try:
        assert run_cli(["server", "start"], env).returncode == 0
        assert run_cli(["server", "stop"], env).returncode == 0
        again = run_cli(["pending", "--json"], env)
        assert again.returncode == 0, again.stderr
        assert "note: started the embedded Temporal server" in again.stderr and "it was not running" in again.stderr
        quiet = run_cli(["pending", "--json"], env)  # running now: nothing to say
        assert quiet.returncode == 0 and "started the embedded" not in quiet.stderr
    finally:
        run_cli(["server", "stop"], env)


def test_worker_settings_given_to_the_cli_are_flagged_when_a_worker_serves_the_run(dev_server, task_queue):
    import subprocess
    import sys
    import time

    env = dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue)
    worker = subprocess.Popen(
        [sys.executable, "worker.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        for _ in range(100):  # until the worker polls
            ran = run_cli(
                ["run", "hello", "--input", '{"name": "Ada"}', "--wait"], {**env, "ENSEMBLE_LLM": "ollama:llama3.1"}
            )
            if "does not apply" in ran.stderr:
                break
            time.sleep(0.2)
        assert ran.returncode == 0, ran.stderr
        assert "ENSEMBLE_LLM set here does not apply to it" in ran.stderr
    finally:
        worker.terminate()
        worker.wait(timeout=30)


PROBE = """
import asyncio, sys
import ensemble.cli.app as app
app.build_parser().parse_args(["status", "x"])
print("cli:", "mcp" in sys.modules)
from ensemble.runtime.connection import connect
from ensemble.runtime.worker import build_worker
async def main():
    build_worker(await connect(), "probe")  # the bundled mcp_tools flow deploys MCP server 'rates'
    print("worker:", "mcp.client.stdio" in sys.modules)
asyncio.run(main())
"""


def test_the_cli_never_imports_the_mcp_sdk_and_a_worker_deployed_with_mcp_servers_does_at_start(env):
    """Every command pays its imports: the CLI starts without the MCP SDK (about a second of CPU),
    and a worker whose flows name MCP servers imports it at start, not in its first tool call."""

    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["cli: False", "worker: True"]
