"""A sentinel key in the worker's environment, echoed back and raised by every agent kind, never
reaches anything a run leaves behind: the history (`temporal workflow show`), visibility, `status`,
`dlq`, `timeline`, `history`, the worker's log and the server's SQLite files."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import secrets
import string
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from temporalio.client import WorkflowFailureError

from tests.conftest import ROOT, run_cli

SENTINEL = "Snt" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(29))
RETRY = {"initial_interval_s": 0.1, "max_attempts": 2}


def _pad(n: int) -> str:
    return "p" * n


class Echo(BaseHTTPRequestHandler):
    """A service (and an OpenAI-compatible model server) that echoes the caller's key back in its
    failures, placed to straddle each place a message is cut (120, 200, 300 characters)."""

    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
        key = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        Echo.seen.append(key)
        status, reply, extra = self._reply(self.path, body, key)
        data = reply.encode() if isinstance(reply, str) else json.dumps(reply).encode()
        self.send_response(status)
        for k, v in extra.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _reply(self, path: str, body: Any, key: str) -> tuple[int, Any, dict[str, str]]:
        if path == "/h401":
            return 401, _pad(195) + key + " is not a valid key", {}
        if path == "/h500":
            return 500, f"{key} {_pad(180)}{key}", {}
        if path == "/h302":
            return 302, "", {"Location": f"http://elsewhere.invalid/login?key={key}"}
        if path == "/tool500":
            return 503, _pad(190) + key, {}
        if path.endswith("/chat/completions"):
            prompt = json.dumps(body)
            if "mode-400" in prompt:
                return 400, {"error": {"message": _pad(290) + key, "type": "invalid_request_error"}}, {}
            if "mode-500" in prompt:
                return 500, _pad(110) + key + _pad(100), {}
            if "mode-garbage" in prompt:
                return 200, _pad(115) + key, {}
            if "mode-tool" in prompt:
                call = {"id": "c1", "type": "function", "function": {"name": "crm", "arguments": "{}"}}
                message = {"role": "assistant", "content": None, "tool_calls": [call]}
                return (
                    200,
                    {
                        "choices": [{"message": message, "finish_reason": "tool_calls"}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
                    },
                    {},
                )
        return 404, f"no route {path} for {key}", {}

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def echo() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def _http(name: str, url: str) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "http",
        "url": url,
        "timeout_s": 5,
        "retry": RETRY,
        "headers": {"Authorization": "Bearer ${env:CRM_API_KEY}"},
    }


def _function(name: str, handler: str) -> dict[str, Any]:
    return {"name": name, "kind": "function", "handler": f"tests.secret_agents:{handler}", "retry": RETRY}


def _llm(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "llm",
        "model": "openai:test-model",
        "retry": RETRY,
        "tools": ["crm"],
        "llm": {"instructions": "Answer.", "prompt": "{text}", "output_model": "tests.llm_agents:Triage"},
    }


def flows(url: str) -> dict[str, tuple[dict[str, Any], str]]:
    """name -> (one-agent flow, the text its input carries)."""
    agents = {
        "http401": (_http("http401", f"{url}/h401"), ""),
        "http500": (_http("http500", f"{url}/h500"), ""),
        "http302": (_http("http302", f"{url}/h302"), ""),
        "fnmsg": (_function("fnmsg", "leak_in_message"), ""),
        "cut": (_function("cut", "leak_at_the_cut"), ""),
        "fncause": (_function("fncause", "leak_in_cause"), ""),
        "fast": ({**_function("fast", "leak_in_message"), "fast": True}, ""),
        "llm400": (_llm("llm400"), "mode-400"),
        "llm500": (_llm("llm500"), "mode-500"),
        "llmgarbage": (_llm("llmgarbage"), "mode-garbage"),
        "llmtool": (_llm("llmtool"), "mode-tool"),
    }
    tool = {
        "name": "crm",
        "kind": "http",
        "url": f"{url}/tool500",
        "headers": {"Authorization": "Bearer ${env:CRM_API_KEY}"},
        "input_schema": {"type": "object"},
        "timeout_s": 5,
    }
    out = {}
    for name, (agent, text) in agents.items():
        flow = {
            "name": f"leak_{name}",
            "imports": ["tests.llm_agents"],
            "agents": [agent],
            "tools": [tool],
            "steps": [{"agent": name, "input": {"text": "$input.text"}}],
        }
        out[name] = (flow, text)
    return out


def assert_clean(where: str, data: str | bytes) -> None:
    text = data.decode("latin-1") if isinstance(data, bytes) else data
    for i in range(len(SENTINEL) - 7):
        piece = SENTINEL[i : i + 8]
        assert piece not in text, (
            f"{where}: holds {piece!r} of the sentinel at {text.find(piece)}: ...{text[max(0, text.find(piece) - 80) : text.find(piece) + 40]!r}"
        )


@pytest.mark.timeout(600)  # eleven runs, each read back by six commands
async def test_a_sentinel_key_never_leaves_the_worker(dev_server, task_queue, echo, tmp_path):
    env = dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue)
    worker_log = tmp_path / "worker.log"
    worker_env = dev_server.env(
        ENSEMBLE_TASK_QUEUE=task_queue,
        CRM_API_KEY=SENTINEL,
        OPENAI_API_KEY=SENTINEL,
        OPENAI_BASE_URL=f"{echo}/v1",
        ENSEMBLE_ENV_ALLOW="CRM_API_KEY",
        ENSEMBLE_LOG_FORMAT="json",
    )
    run_ids = []
    with worker_log.open("w") as log:
        worker = subprocess.Popen(
            [sys.executable, "worker.py"], cwd=ROOT, env=worker_env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        try:
            for name, (flow, text) in flows(echo).items():
                path = tmp_path / f"{name}.flow.yaml"
                path.write_text(yaml.safe_dump(flow))
                run_id = f"leak-{name}-{task_queue}"
                started = run_cli(
                    ["run", str(path), "--input", json.dumps({"text": text}), "--id", run_id, "--json"], env
                )
                assert started.returncode == 0, started.stderr
                run_ids.append(run_id)
            for run_id in run_ids:
                with pytest.raises(WorkflowFailureError):
                    await asyncio.wait_for(dev_server.client.get_workflow_handle(run_id).result(), timeout=90)
        finally:
            worker.terminate()
            worker.wait(timeout=20)
    assert SENTINEL in Echo.seen, "the services never saw the key: the test proves nothing"

    temporal = str(Path(sys.executable).parent / "temporal")
    address = ["--address", dev_server.info.address, "--namespace", "default"]

    def temporal_cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([temporal, *args, *address], capture_output=True, text=True, timeout=60)

    def read_back(run_id: str) -> list[tuple[str, subprocess.CompletedProcess]]:
        """Everything a person can read about one run, through `temporal` and the CLI."""
        page = tmp_path / f"{run_id}.html"
        views = [
            (f"temporal workflow show {run_id}", temporal_cli("workflow", "show", "-w", run_id, "-o", "json")),
            (f"temporal workflow describe {run_id}", temporal_cli("workflow", "describe", "-w", run_id, "-o", "json")),
        ]
        # (`history RUN` exports what `temporal workflow show` printed above)
        for args in (
            ["status", run_id, "--json"],
            ["status", run_id],
            ["dlq", "show", run_id, "--json"],
            ["dlq", "show", run_id],
            ["timeline", run_id, "--out", str(page)],
        ):
            views.append((" ".join(args), run_cli(args, env)))
        timeline = views[-1][1]
        assert timeline.returncode == 0, timeline.stderr
        views.append((f"timeline {run_id} (the page)", subprocess.CompletedProcess([], 0, page.read_text(), "")))
        return views

    # The read-backs of different runs are independent: a few at a time keep the test short.
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        per_run = list(pool.map(read_back, run_ids))
    redacted = 0
    for views in per_run:
        (show_label, shown), (describe_label, described), *commands = views
        assert shown.returncode == 0, shown.stderr
        assert "Failed" in shown.stdout or "FAILED" in shown.stdout
        assert_clean(show_label, shown.stdout)
        redacted += shown.stdout.count("[redacted]")
        assert_clean(describe_label, described.stdout)
        for label, out in commands:
            assert out.returncode in (0, 1), (label, out.stderr)
            assert_clean(label, out.stdout + out.stderr)
    assert redacted >= len(run_ids), "the failures should say where a secret was taken out"

    listed = temporal_cli("workflow", "list", "-o", "json")
    assert_clean("temporal workflow list (visibility)", listed.stdout)
    assert_clean("dlq list", run_cli(["dlq", "list", "--json"], env).stdout)
    assert_clean("dlq list (table)", run_cli(["dlq", "list"], env).stdout)
    assert_clean("the worker log", worker_log.read_text())
    db = Path(dev_server.info.db)
    for f in (db, db.with_name(db.name + "-wal")):
        if f.exists():
            assert_clean(f.name, f.read_bytes())


async def test_the_redaction_step_knows_values_shapes_and_cut_pieces(monkeypatch):
    from ensemble.activities import scrub

    monkeypatch.setenv("SOME_SERVICE_TOKEN", "tok-Abcdefgh123456789")
    monkeypatch.setenv("PLAIN", "Zyxwvutsrq98765")
    monkeypatch.setenv("ENSEMBLE_ENV_ALLOW", "PLAIN")
    assert scrub.scrub("a tok-Abcdefgh123456789 b") == "a [redacted] b"
    assert scrub.scrub("allowed Zyxwvutsrq98765!") == "allowed [redacted]!"
    assert scrub.scrub("cut at the end: tok-Abcdefg") == "cut at the end: [redacted]"
    assert scrub.scrub("…h123456789 cut at the start") == "…[redacted] cut at the start"
    assert scrub.clip("x" * 95 + "tok-Abcdefgh123456789", 100) == "x" * 95 + "[reda"
    monkeypatch.setenv("LATER_API_KEY", "q7w8e9")  # set after the first scrub, and as short as a secret gets
    assert scrub.scrub("q7w8e9") == "[redacted]" and scrub.scrub("key q7w8e9.") == "key [redacted]."
    for shape in (
        "Authorization: Bearer abc.def-ghi_jkl",
        "sk-proj-abcdefghijklmnop1234",
        "AKIAIOSFODNN7EXAMPLE",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl",
        'password="hunter2hunter2"',
        "ghp_abcdefghijklmnopqrstuvwx",
        "Authorization: Basic dXNlcjpwYXNzd29yZA==",
        "API_KEY=abcdef123",
        "xoxb-1234567890-abcdef",
        "then BEARER abcdefgh12345678 then",
    ):
        assert "[redacted]" in scrub.scrub(shape), shape
    for plain in (
        "a run id leak_http401-test-abc",
        "HTTP 500 from http://127.0.0.1:8080/h500",
        "/root/.Xresources",
        "basic information about token refreshing",
    ):
        assert scrub.scrub(plain) == plain


async def test_env_references_outside_the_allow_list_are_refused(monkeypatch):
    from temporalio.exceptions import ApplicationError

    from ensemble.activities.scrub import resolve_env_refs

    monkeypatch.setenv("CRM_API_KEY", "k-123456789")
    monkeypatch.setenv("OPENAI_API_KEY", "k-abcdefghi")
    monkeypatch.setenv("ENSEMBLE_ENV_ALLOW", "CRM_API_KEY")
    assert resolve_env_refs("Bearer ${env:CRM_API_KEY}", "agent 'a'") == "Bearer k-123456789"
    with pytest.raises(ApplicationError) as refused:
        resolve_env_refs("Bearer ${env:OPENAI_API_KEY}", "agent 'a'")
    assert refused.value.non_retryable and refused.value.type == "EnvNotAllowed"
    assert (
        "agent 'a': ${env:OPENAI_API_KEY} is not on this worker's allow-list (ENSEMBLE_ENV_ALLOW allows only CRM_API_KEY)"
        in refused.value.message
    )
    monkeypatch.delenv("ENSEMBLE_ENV_ALLOW")
    with pytest.raises(ApplicationError, match="ENSEMBLE_ENV_ALLOW is not set"):
        resolve_env_refs("${env:CRM_API_KEY}", "agent 'a'")
