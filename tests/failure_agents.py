"""Agents the failure-handling tests run. Each one writes to a SQLite ledger whose path is in its
input (`ledger`), so a test counts executions, attempts and external effects across worker
processes, including workers killed with SIGKILL."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

from ensemble import AgentContext, RetrySpec, agent

FAST = RetrySpec(initial_interval_s=0.1, backoff_coefficient=1.0, max_attempts=3)
ONCE = RetrySpec(max_attempts=1)

SCHEMA = """
create table if not exists execs (id integer primary key autoincrement, run_id text, step text, agent text,
                                  attempt integer, key text, payload text);
create table if not exists effects (key text primary key, run_id text, step text, amount real);
create table if not exists deliveries (id integer primary key autoincrement, key text, run_id text, attempt integer);
create table if not exists undo (id integer primary key autoincrement, run_id text, step text, agent text, key text, payload text);
"""


def connect(path: str | Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
    conn.execute("pragma journal_mode=wal")
    conn.executescript(SCHEMA)
    return conn


def rows(path: str | Path, sql: str, *args: Any) -> list[tuple]:
    with connect(path) as conn:
        return conn.execute(sql, args).fetchall()


def _write(path: str, sql: str, *args: Any) -> int:
    conn = connect(path)
    try:
        return conn.execute(sql, args).rowcount
    finally:
        conn.close()


def _exec(data: dict, ctx: AgentContext) -> None:
    _write(
        data["ledger"],
        "insert into execs (run_id, step, agent, attempt, key, payload) values (?, ?, ?, ?, ?, ?)",
        ctx.run_id,
        ctx.step,
        ctx.agent,
        ctx.attempt,
        ctx.idempotency_key,
        json.dumps(data, sort_keys=True),
    )


@agent(description="Records that it ran and passes its value on", retry=FAST)
async def tally(data: dict, ctx: AgentContext) -> dict:
    await asyncio.to_thread(_exec, data, ctx)
    return {"step": ctx.step, "value": data.get("value"), "attempt": ctx.attempt}


@agent(
    description="Charges a card: an external effect, done once per idempotency key",
    effect="irreversible",
    timeout_s=3,
    retry=RetrySpec(initial_interval_s=0.1, backoff_coefficient=1.0, max_attempts=6),
)
async def charge(data: dict, ctx: AgentContext) -> dict:
    """Does the effect at once (INSERT OR IGNORE on its key, as a payment service dedupes), then
    holds for `hold` seconds, as if waiting on the service's reply: a worker killed then has done
    the effect without completing the activity, so the retry presents the same key."""
    if not ctx.idempotency_key:
        raise ValueError("an irreversible agent was given no idempotency key")
    await asyncio.to_thread(_exec, data, ctx)
    await asyncio.to_thread(
        _write,
        data["ledger"],
        "insert into deliveries (key, run_id, attempt) values (?, ?, ?)",
        ctx.idempotency_key,
        ctx.run_id,
        ctx.attempt,
    )
    done = await asyncio.to_thread(
        _write,
        data["ledger"],
        "insert or ignore into effects (key, run_id, step, amount) values (?, ?, ?, ?)",
        ctx.idempotency_key,
        ctx.run_id,
        ctx.step,
        float(data.get("amount", 1)),
    )
    await asyncio.sleep(float(data.get("hold", 0)))
    return {"charged": data.get("amount", 1), "key": ctx.idempotency_key, "new": bool(done)}


@agent(
    description="Undoes a step (a compensation): records what it was asked to undo", effect="irreversible", retry=FAST
)
async def undo(data: dict, ctx: AgentContext) -> dict:
    ledger = data.get("ledger") or (data.get("input") or {}).get("ledger")
    await asyncio.to_thread(
        _write,
        ledger,
        "insert into undo (run_id, step, agent, key, payload) values (?, ?, ?, ?, ?)",
        ctx.run_id,
        ctx.step,
        ctx.agent,
        ctx.idempotency_key,
        json.dumps(data, sort_keys=True),
    )
    return {"undone": ctx.step}


@agent(description="A compensation that always fails", retry=RetrySpec(initial_interval_s=0.1, max_attempts=2))
def botched_undo(data: dict) -> dict:
    raise RuntimeError("the refund service is down")


@agent(description="Fails for good on every call", retry=FAST)
async def explode(data: dict, ctx: AgentContext) -> dict:
    await asyncio.to_thread(_exec, data, ctx)
    raise ValueError(f"cannot process {data.get('value')!r}")


@agent(description="A backup that answers when the primary cannot", retry=FAST)
async def backup(data: dict, ctx: AgentContext) -> dict:
    await asyncio.to_thread(_exec, data, ctx)
    return {"step": ctx.step, "value": data.get("value"), "by": "backup"}


@agent(description="Records that it started, then works for `seconds`")
async def linger(data: dict, ctx: AgentContext) -> dict:
    await asyncio.to_thread(_exec, data, ctx)
    await asyncio.sleep(float(data.get("seconds", 30)))
    return {"lingered": data.get("seconds")}


@agent(
    description="Times out: works longer than its 1 s timeout",
    timeout_s=1,
    retry=RetrySpec(initial_interval_s=0.1, max_attempts=2),
)
async def dawdle(data: dict, ctx: AgentContext) -> dict:
    await asyncio.to_thread(_exec, data, ctx)
    await asyncio.sleep(5)
    return {}


@agent(description="Sends a notification (the step the DLQ tests break with ENSEMBLE_FAULTS)", retry=FAST)
async def notify(data: dict, ctx: AgentContext) -> dict:
    await asyncio.to_thread(_exec, data, ctx)
    return {"sent": data.get("value"), "attempt": ctx.attempt}


@agent(
    description="A short agent with a 1 s timeout and two attempts",
    timeout_s=1,
    retry=RetrySpec(initial_interval_s=0.1, max_attempts=2),
)
async def brief(data: dict, ctx: AgentContext) -> dict:
    await asyncio.to_thread(_exec, data, ctx)
    return {"ok": True}


@agent(description="Is refused access (a permission no retry can grant)", retry=FAST)
async def forbidden(data: dict, ctx: AgentContext) -> dict:
    await asyncio.to_thread(_exec, data, ctx)
    raise PermissionError("the service account cannot write to the ledger bucket")


@agent(
    description="Works without heartbeating though its spec asks for heartbeats",
    heartbeat_s=1,
    retry=RetrySpec(initial_interval_s=0.1, max_attempts=2),
)
async def silent(data: dict, ctx: AgentContext) -> dict:
    await asyncio.to_thread(_exec, data, ctx)
    await asyncio.sleep(4)
    return {}
