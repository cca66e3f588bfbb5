"""Structured logs of a real worker process: JSON lines bound with run id, flow, step, agent and
attempt; one `agent finished` per attempt (and `agent started` before it at debug); no secrets,
no inputs, no tracebacks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.flowkit import request, start

SENTINEL = "sk-sentinel-7f3a9c1e5b"
PRIVATE = "PRIVATE-INPUT-4411"

AGENTS = '''
import logging
import os

import structlog

from ensemble import agent


@agent()
def leaky(data: dict) -> dict:
    """Logs its credential every way an agent might: all of it must come out redacted."""
    key = os.environ["ACME_API_KEY"]
    structlog.get_logger("leaky").info("calling the service", api_key=key, note=f"with {key}")
    logging.getLogger("leaky").warning("using key %s", key)
    return {"ok": True, "echo": data}
'''

FLOW = """
name: logged
imports: [logged_agents, tests.agents]
steps:
  - agent: shout
    input: {text: $input.text}
  - agent: flaky
    input: {}
  - agent: leaky
    input: {text: $input.text}
"""


@pytest.fixture
def agents_dir(tmp_path, monkeypatch) -> Path:
    (tmp_path / "logged_agents.py").write_text(textwrap.dedent(AGENTS))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def worker_lines(dev_server, task_queue: str, agents_dir: Path, log: Path, **env: str) -> subprocess.Popen:
    environment = dev_server.env(
        ENSEMBLE_TASK_QUEUE=task_queue, ACME_API_KEY=SENTINEL, ENSEMBLE_FLOWS="logged_agents,tests.agents", **env
    )
    environment["PYTHONPATH"] = f"{ROOT}:{agents_dir}"
    return subprocess.Popen(
        [sys.executable, "worker.py"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        stdin=subprocess.DEVNULL,
    )


async def run_with_worker(dev_server, task_queue, agents_dir, log: Path) -> str:
    worker = worker_lines(dev_server, task_queue, agents_dir, log)
    try:
        handle = await start(dev_server.client, request(FLOW, {"text": f"hello {PRIVATE}"}, task_queue))
        await handle.result()
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    return handle.id


async def test_worker_logs_json_lines_bound_to_the_agent_attempt(dev_server, task_queue, agents_dir, tmp_path):
    log = tmp_path / "worker.log"
    run_id = await run_with_worker(dev_server, task_queue, agents_dir, log)
    text = log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is JSON
    assert any("worker polling task queue" in r["event"] for r in lines)
    agent_lines = [r for r in lines if r["event"] in ("agent started", "agent finished")]
    seen = [(r["event"], r["agent"], r["attempt"], r.get("outcome")) for r in agent_lines]
    assert sorted(seen) == sorted(  # at info, one line per attempt: `agent started` is a debug line
        [
            ("agent finished", "shout", 1, "completed"),
            ("agent finished", "flaky", 1, "retrying"),
            ("agent finished", "flaky", 2, "completed"),
            ("agent finished", "leaky", 1, "completed"),
        ]
    )
    assert all(r["kind"] == "function" for r in agent_lines)
    for r in agent_lines:
        assert (r["run_id"], r["flow"], r["step"]) == (run_id, "logged", r["agent"])
        assert r["level"] in ("info", "warning") and r["logger"] == "ensemble.agent" and r["timestamp"]
        if r["event"] == "agent finished":
            assert isinstance(r["latency_ms"], (int, float)) and r["latency_ms"] >= 0
    retry = next(r for r in agent_lines if r.get("outcome") == "retrying")
    assert retry["error_type"] == "ApplicationError" and "transient blip" in retry["error"]
    assert "Traceback" not in text

    # the agent's own lines (structlog and stdlib logging) carry its run, step and attempt
    own = [r for r in lines if r["logger"] == "leaky"]
    assert len(own) == 2 and all((r["run_id"], r["step"], r["attempt"]) == (run_id, "leaky", 1) for r in own)
    # no secret and no agent input or output anywhere
    assert SENTINEL not in text
    assert PRIVATE not in text and "HELLO" not in text
    assert any(r.get("api_key") == "[redacted]" for r in own)
    assert any("[redacted]" in r["event"] for r in own)


async def test_console_rendering_and_debug_level_on_request(dev_server, task_queue, agents_dir, tmp_path):
    """ENSEMBLE_LOG_FORMAT=console gives the readable form a terminal gets; ENSEMBLE_LOG_LEVEL=debug
    adds `agent started` before each attempt."""
    log = tmp_path / "worker.log"
    worker = worker_lines(
        dev_server, task_queue, agents_dir, log, ENSEMBLE_LOG_FORMAT="console", ENSEMBLE_LOG_LEVEL="debug"
    )
    try:
        handle = await start(dev_server.client, request(FLOW, {"text": "hi"}, task_queue))
        await handle.result()
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    text = log.read_text()
    finished = [line for line in text.splitlines() if "agent finished" in line and "agent=shout" in line]
    assert len(finished) == 1 and "outcome=completed" in finished[0] and f"run_id={handle.id}" in finished[0]
    started = [line for line in text.splitlines() if "agent started" in line and "agent=shout" in line]
    assert len(started) == 1 and "kind=function" in started[0]
    assert text.index(started[0]) < text.index(finished[0])
    assert not text.lstrip().startswith("{")
    assert SENTINEL not in text


def test_failure_is_one_field_without_traceback_unless_debug(tmp_path):
    """A logged exception is one `error` field; ENSEMBLE_DEBUG=1 keeps the traceback."""
    code = textwrap.dedent("""
        import logging
        from ensemble.runtime import logs
        logs.setup()
        try:
            raise ValueError("bad ledger")
        except ValueError:
            logging.getLogger("x").exception("posting failed")
    """)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    plain = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    [line] = plain.stderr.splitlines()
    record = json.loads(line)
    assert (record["event"], record["error"], record["level"]) == ("posting failed", "ValueError: bad ledger", "error")
    debug = subprocess.run(
        [sys.executable, "-c", code], env={**env, "ENSEMBLE_DEBUG": "1"}, capture_output=True, text=True, timeout=60
    )
    record = json.loads(debug.stderr.splitlines()[0])
    assert "Traceback" in record["exception"]


def test_the_http_clients_request_lines_are_left_out_and_its_warnings_kept():
    code = textwrap.dedent("""
        import logging
        from ensemble.runtime import logs
        logs.setup()
        logging.getLogger("httpx").info('HTTP Request: POST http://127.0.0.1/v1/chat/completions "HTTP/1.1 200 OK"')
        logging.getLogger("httpcore.connection").info("connect_tcp.started")
        logging.getLogger("httpx").warning("retrying the connection")
        logging.getLogger("ensemble.agent").info("agent finished")
    """)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert [json.loads(line)["event"] for line in out.stderr.splitlines()] == [
        "retrying the connection",
        "agent finished",
    ]


def test_an_unknown_log_level_is_one_line_and_exit_2():
    proc = subprocess.run(
        [sys.executable, "worker.py"],
        cwd=ROOT,
        env={**os.environ, "ENSEMBLE_LOG_LEVEL": "loud"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip() == "error: ENSEMBLE_LOG_LEVEL='loud' is not a log level: use debug, info, warning or error"
    )
