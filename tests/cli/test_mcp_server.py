"""`starter.py mcp`: Ensemble served as an MCP server, exercised by the `mcp` SDK's client over stdio
and streamable HTTP: it lists flows, starts a run that a worker completes, follows it, and lists
pending approvals; it has no decide tool."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from mcp import Client
from mcp.client.stdio import StdioServerParameters

from tests.conftest import ROOT, running_worker
from tests.mcp_kit import free_port

TOOLS = {"list_flows", "start_run", "run_status", "pending_approvals"}


def _json(result) -> object:
    assert not result.is_error, result.content
    if result.structured_content is not None:
        value = result.structured_content
        return value.get("result", value) if isinstance(value, dict) and set(value) == {"result"} else value
    return json.loads(result.content[0].text)


async def _exercise(client: Client, dev_server, task_queue: str) -> None:
    listed = {t.name for t in (await client.list_tools()).tools}
    assert listed == TOOLS  # no decide tool: deciding stays with people and their proofs
    flows = {f["name"] for f in _json(await client.call_tool("list_flows", {}))}
    assert {"hello", "mcp_tools"} <= flows
    refused = await client.call_tool("start_run", {"flow": "/etc/passwd", "input": {}})
    assert refused.is_error and "no flow named '/etc/passwd'" in refused.content[0].text
    started = _json(await client.call_tool("start_run", {"flow": "hello", "input": {"name": "Ada"}}))
    assert started["flow"] == "hello" and started["task_queue"] == task_queue
    async with running_worker(dev_server.client, task_queue):
        for _ in range(600):
            status = _json(await client.call_tool("run_status", {"run_id": started["run_id"]}))
            if status["status"] == "completed":
                break
            await asyncio.sleep(0.1)
    assert status["status"] == "completed" and [s["agent"] for s in status["steps"]] == [
        "greeter",
        "word_stats",
        "letter_stats",
    ]
    assert isinstance(_json(await client.call_tool("pending_approvals", {"approver": "alice"})), list)


async def test_starter_mcp_over_stdio(dev_server, task_queue):
    params = StdioServerParameters(
        command=sys.executable,
        args=["starter.py", "mcp"],
        cwd=str(ROOT),
        env=dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue),
    )
    async with Client(params, mode="legacy") as client:
        await _exercise(client, dev_server, task_queue)


async def test_starter_mcp_over_streamable_http_on_loopback(dev_server, task_queue):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "starter.py", "mcp", "--http", str(port)],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue),
    )
    try:
        for _ in range(600):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                assert proc.poll() is None, "starter.py mcp --http exited"
                await asyncio.sleep(0.1)
        async with Client(f"http://127.0.0.1:{port}/mcp", mode="legacy") as client:
            await _exercise(client, dev_server, task_queue)
    finally:
        proc.terminate()
        proc.wait(10)
