"""Helpers for tests of MCP tools: flows around an llm agent whose tools come from tests/mcp_server.py,
the server over streamable HTTP as a process of its own, and its ledger."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ensemble.runtime.server import free_port as free_port  # a port below the ephemeral range
from tests.conftest import ROOT


def ledger(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def stdio_server(name: str, ledger_file: Path, *extra: str) -> dict[str, Any]:
    return {"name": name, "command": ["python", "-m", "tests.mcp_server", str(ledger_file), "stdio", *extra]}


def http_server(name: str, port: int) -> dict[str, Any]:
    return {"name": name, "url": f"http://127.0.0.1:{port}/mcp"}


def start_http(ledger_file: Path, port: int, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """tests/mcp_server.py over streamable HTTP on 127.0.0.1:PORT, once it accepts connections."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.mcp_server", str(ledger_file), "http", str(port), *extra],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("the MCP test server did not start listening")


def mcp_flow(
    model: str, servers: list[dict[str, Any]], tools: list[dict[str, Any]], allowed: list[str], **agent: Any
) -> dict[str, Any]:
    """A one-agent flow: llm agent `clerk` may call `allowed` of the declared MCP `tools`; it answers free text."""
    spec = {
        "name": "clerk",
        "kind": "llm",
        "model": model,
        "tools": allowed,
        "llm": {"instructions": "You are a clerk.", "prompt": "Task: {text}"},
        "retry": {"initial_interval_s": 0.2, "max_attempts": 5},
        **agent,
    }
    return {
        "name": "mcp_test",
        "agents": [spec],
        "tools": tools,
        "mcp_servers": servers,
        "steps": [{"agent": "clerk", "input": {"text": "$input.text"}}],
    }


def text(value: str, usage: tuple[int, int] = (10, 5)) -> dict[str, Any]:
    """A script entry: a free-text final answer."""
    return {"reply": {"text": value, "usage": list(usage)}}
