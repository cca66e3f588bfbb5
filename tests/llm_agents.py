"""Tools, models and helpers the llm tests use (imported by in-process and subprocess workers alike),
and the `llm_server` fixture: the loopback model server of tests/llm_server.py as a process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from ensemble.authoring.tools import ToolContext, ToolError, tool
from tests.conftest import ROOT

SENTINEL_KEY = "sk-test-SENTINEL-4b1d9e"
FLAKY_CALLS: dict[str, int] = {}
REFUNDS: list[dict[str, Any]] = []


class Triage(BaseModel):
    label: Literal["billing", "outage", "other"]
    priority: int


@tool(description="Looks up an order by its id")
def lookup_order(order_id: str) -> dict:
    if order_id == "missing":
        raise ToolError(f"no order {order_id}")
    return {"order_id": order_id, "status": "shipped", "total": 42.5}


@tool(description="Looks up an order; fails once per run with a connection error")
async def flaky_lookup(order_id: str, ctx: ToolContext) -> dict:
    FLAKY_CALLS[ctx.run_id] = FLAKY_CALLS.get(ctx.run_id, 0) + 1
    if FLAKY_CALLS[ctx.run_id] == 1:
        raise ConnectionError("order service connection reset")
    return {"order_id": order_id, "status": "delayed"}


@tool(description="Refunds an order", effect="irreversible")
def refund(order_id: str, amount: float, ctx: ToolContext) -> dict:
    REFUNDS.append({"order_id": order_id, "amount": amount, "key": ctx.idempotency_key, "run_id": ctx.run_id})
    return {"refunded": amount}


@tool(description="Deletes every order (no agent should be allowed this)", effect="irreversible")
def delete_everything() -> dict:
    raise AssertionError("a refused tool ran")


@tool(description="The first time: marks that it started, then works for a while. Later: returns at once")
def slow_tool(marker: str, seconds: float = 60) -> dict:
    if Path(marker).exists():
        return {"done": True, "again": True}
    Path(marker).write_text("started")
    time.sleep(seconds)
    return {"done": True, "again": False}


# ---------------------------------------------------------------- the loopback server


@dataclass
class LoopbackServer:
    url: str
    log: Path
    process: subprocess.Popen = field(repr=False)

    def requests(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    @property
    def openai_base(self) -> str:
        return f"{self.url}/v1"


@pytest.fixture
def llm_server(tmp_path) -> Iterator[Any]:
    """`llm_server(script)`: start a loopback model server answering from `script` (a list of
    entries, see tests/llm_server.py)."""
    started: list[LoopbackServer] = []

    def start(script: list[dict[str, Any]]) -> LoopbackServer:
        n = len(started)
        script_file, log = tmp_path / f"script{n}.json", tmp_path / f"requests{n}.jsonl"
        script_file.write_text(json.dumps(script))
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.llm_server", "--script", str(script_file), "--log", str(log)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        line = proc.stdout.readline()
        assert line.startswith("listening on "), proc.stderr.read()
        server = LoopbackServer(url=line.split()[-1], log=log, process=proc)
        started.append(server)
        return server

    yield start
    for server in started:
        server.process.terminate()
        server.process.wait(timeout=10)


def use_server(monkeypatch: pytest.MonkeyPatch, server: LoopbackServer, key: str = SENTINEL_KEY) -> None:
    """Point this process's providers (the in-process worker) at the loopback server."""
    monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base)
    monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    monkeypatch.delenv("ENSEMBLE_LLM", raising=False)


def llm_flow(
    model: str,
    *,
    tools: list[str] | None = None,
    llm: dict[str, Any] | None = None,
    budget: dict | None = None,
    extra_tools: list[dict] | None = None,
    retry: dict | None = None,
    **agent: Any,
) -> dict[str, Any]:
    """A one-agent flow around an llm agent `support` that answers a ticket as a `Triage`."""
    spec = {
        "name": "support",
        "kind": "llm",
        "model": model,
        "tools": tools or [],
        "llm": {
            "instructions": "You triage support tickets.",
            "prompt": "Ticket: {text}",
            "output_model": "tests.llm_agents:Triage",
            **(llm or {}),
        },
        "retry": retry or {"initial_interval_s": 0.1, "max_attempts": 3},
        **agent,
    }
    flow: dict[str, Any] = {
        "name": "llm_test",
        "imports": ["tests.llm_agents"],
        "agents": [spec],
        "tools": extra_tools or [],
        "steps": [{"agent": "support", "input": {"text": "$input.text"}}],
    }
    if budget:
        flow["budget"] = budget
    return flow


def answer(label: str = "billing", priority: int = 2, usage: tuple[int, int] = (10, 5)) -> dict[str, Any]:
    """A script entry: a structured Triage answer."""
    return {"reply": {"json": {"label": label, "priority": priority}, "usage": list(usage)}}


def calls(*tool_calls: tuple[str, Any], usage: tuple[int, int] = (10, 5), **extra: Any) -> dict[str, Any]:
    """A script entry: the model asks for these tool calls."""
    return {
        "reply": {"tool_calls": [{"name": n, "arguments": a} for n, a in tool_calls], "usage": list(usage)},
        **extra,
    }
