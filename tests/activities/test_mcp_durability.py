"""A worker SIGKILLed in the middle of an llm agent's tool turn: the retry on a new worker neither
pays the model again for the finished turn nor repeats the finished MCP call, by the MCP server's
own ledger (tests/mcp_server.py). The worker is a `worker.py` process that loaded the flow file
declaring the MCP server (`ENSEMBLE_FLOWS`), as in production."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tests.flowkit import request, start
from tests.llm_agents import SENTINEL_KEY, calls, llm_server  # noqa: F401
from tests.mcp_kit import ledger, mcp_flow, stdio_server, text


def _worker(dev_server, task_queue: str, model, flows: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "worker.py"],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dev_server.env(
            ENSEMBLE_TASK_QUEUE=task_queue,
            OPENAI_BASE_URL=model.openai_base,
            OPENAI_API_KEY=SENTINEL_KEY,
            ENSEMBLE_FLOWS=flows,
        ),
    )


async def _checkpointed(handle, needle: bytes, timeout: float = 60) -> None:
    """Until the running agent's last heartbeat (its checkpoint) holds `needle` (a loaded machine takes a while
    to start the worker and the agent)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        desc = await handle.describe()
        for pending in desc.raw_description.pending_activities:
            if any(needle in p.data for p in pending.heartbeat_details.payloads):
                return
        await asyncio.sleep(0.1)
    details = [
        (p.activity_id, p.last_failure.message, [d.data[:300] for d in p.heartbeat_details.payloads])
        for p in desc.raw_description.pending_activities
    ]
    raise AssertionError(f"the checkpoint never recorded the finished call: {details}")


@pytest.mark.chaos
async def test_a_worker_killed_mid_turn_repeats_no_finished_mcp_call(dev_server, task_queue, llm_server, tmp_path):
    book, gate = tmp_path / "ledger.jsonl", tmp_path / "go"
    tools = [
        {"name": "pay", "kind": "mcp", "server": "calc", "effect": "irreversible"},
        {"name": "slow", "kind": "mcp", "server": "calc", "timeout_s": 120},
    ]
    flow = mcp_flow("openai:test-model", [stdio_server("calc", book)], tools, ["pay", "slow"], heartbeat_s=2)
    flow_file = tmp_path / "mcp_durable.flow.json"
    flow_file.write_text(json.dumps(flow))
    model = llm_server([calls(("pay", {"to": "bob", "amount": 5}), ("slow", {"gate": str(gate)})), text("paid")])
    worker = _worker(dev_server, task_queue, model, str(flow_file))
    try:
        handle = await start(dev_server.client, request(flow, {"text": "pay bob"}, task_queue))
        for _ in range(400):
            if any(e["tool"] == "slow" for e in ledger(book)):
                break
            assert worker.poll() is None, "the worker exited"
            await asyncio.sleep(0.05)
        assert ledger(book), "the tools never ran"
        await _checkpointed(handle, b"R-1")  # pay's receipt is in the transcript the worker heartbeated
        worker.kill()  # SIGKILL mid-turn: the model call is finished, pay is finished, slow is in flight
        worker.wait(timeout=10)
        gate.write_text("open")
        worker = _worker(dev_server, task_queue, model, str(flow_file))
        outcome = await asyncio.wait_for(handle.result(), timeout=120)
    finally:
        worker.kill()
        worker.wait(timeout=10)
    assert outcome.output == {"clerk": "paid"}
    pays = [e for e in ledger(book) if e["tool"] == "pay"]
    assert [e["status"] for e in pays] == ["paid"]  # done once, never replayed
    assert [r["entry"] for r in model.requests()] == [0, 1]  # the finished model turn was not paid for again
    assert any(e["tool"] == "slow" and e["status"] == "done" for e in ledger(book))
