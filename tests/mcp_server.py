"""An MCP server for tests, written with the `mcp` SDK:

    python -m tests.mcp_server LEDGER [stdio | http PORT] [--without TOOL]

Every tool call it carries out is appended to the LEDGER file (JSON lines: tool, arguments, the
idempotency key from the call's `_meta`, pid), so tests can count what was done, by the server's
own account. `pay` is irreversible: a call whose key was already paid is not paid again (it
answers with the earlier receipt and is ledgered as `replayed`). `slow` waits until the file
named by its `gate` argument exists (a test holds a call in flight with it).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import Context, MCPServer

LEDGER = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("ledger.jsonl")
WITHOUT = sys.argv[sys.argv.index("--without") + 1] if "--without" in sys.argv else None
app = MCPServer("ensemble-test-tools", log_level="WARNING")


def _key(ctx: Context) -> str | None:
    meta = ctx.request_context.meta
    return (dict(meta) if meta else {}).get("ensemble/idempotency_key")


def _ledger(entry: dict[str, Any]) -> None:
    with LEDGER.open("a") as f:
        f.write(json.dumps({**entry, "pid": os.getpid(), "t": time.time()}) + "\n")


def _entries() -> list[dict[str, Any]]:
    return [json.loads(line) for line in LEDGER.read_text().splitlines() if line.strip()] if LEDGER.exists() else []


@app.tool(description="Adds two integers")
def add(a: int, b: int, ctx: Context) -> dict:
    _ledger({"tool": "add", "arguments": {"a": a, "b": b}, "key": _key(ctx)})
    return {"sum": a + b}


@app.tool(description="Pays an amount to someone (irreversible)")
def pay(to: str, amount: float, ctx: Context) -> dict:
    key = _key(ctx)
    earlier = next(
        (e for e in _entries() if e["tool"] == "pay" and e.get("status") == "paid" and key and e["key"] == key), None
    )
    if earlier is not None:
        _ledger({"tool": "pay", "arguments": {"to": to, "amount": amount}, "key": key, "status": "replayed"})
        return earlier["receipt"]
    receipt = {"paid": amount, "to": to, "receipt": f"R-{len(_entries()) + 1}"}
    _ledger(
        {"tool": "pay", "arguments": {"to": to, "amount": amount}, "key": key, "status": "paid", "receipt": receipt}
    )
    return receipt


@app.tool(description="Waits until the file `gate` exists, then answers")
def slow(gate: str, ctx: Context) -> dict:
    _ledger({"tool": "slow", "arguments": {"gate": gate}, "key": _key(ctx), "status": "started"})
    while not Path(gate).exists():
        time.sleep(0.05)
    _ledger({"tool": "slow", "arguments": {"gate": gate}, "key": _key(ctx), "status": "done"})
    return {"waited": True}


@app.tool(description="Says whether the request carried the X-Token header this server expects")
def whoami(ctx: Context) -> dict:
    headers = {k.lower(): v for k, v in (ctx.headers or {}).items()}
    return {
        "authorized": bool(os.environ.get("MCP_EXPECTED_TOKEN"))
        and headers.get("x-token") == os.environ["MCP_EXPECTED_TOKEN"]
    }


if WITHOUT:
    app.remove_tool(WITHOUT)

if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "http":
        app.run("streamable-http", host="127.0.0.1", port=int(sys.argv[3]))
    else:
        app.run()
