"""`starter.py server start|stop|status`: the embedded Temporal server (ensemble/runtime/server.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from ensemble.runtime import connection as temporal
from ensemble.runtime import server
from ensemble.spec.errors import InputError


def cmd_server(args: argparse.Namespace) -> int:
    if not temporal.embedded():
        address = os.environ["TEMPORAL_ADDRESS"]
        raise InputError(f"TEMPORAL_ADDRESS is set ({address}): Ensemble uses that cluster and manages no server")
    if args.action == "start":
        started = server.start()
        asyncio.run(_register_attributes())
        print(
            f"Temporal server running at {started.address} (pid {started.pid}); Web UI {started.ui_url}; "
            f"data {started.db}; closed runs kept {temporal.retention_days()} days"
        )
        return 0
    if args.action == "stop":
        info = server.stop()
        stopped = f"stopped the Temporal server at {info.address} (pid {info.pid})" if info else None
        print(stopped or "the Temporal server was not running")
        return 0
    info = server.running()
    # health (GetSystemInfo, the database, the disk), not just the pid
    trouble = asyncio.run(server.problem(info)) if info else None
    if args.json:
        state = {"running": bool(info), "healthy": bool(info) and not trouble, "problem": trouble or server.died()}
        where = {"address": info.address, "ui": info.ui_url, "pid": info.pid, "db": info.db} if info else {}
        print(json.dumps({**state, **{k: where.get(k) for k in ("address", "ui", "pid", "db")}}, indent=2))
    elif info and trouble:
        print(f"error: unhealthy: {trouble}", file=sys.stderr)
    elif info:
        print(f"running at {info.address} (pid {info.pid}); Web UI {info.ui_url}; data {info.db}")
    elif server.died():
        print(f"error: {server.died()}; `python starter.py server start` starts it again", file=sys.stderr)
    else:
        print(f"not running (state directory {server.state_dir()}); start it with `python starter.py server start`")
    return 0 if info and not trouble else 1


async def _register_attributes() -> None:
    await temporal.ensure_search_attributes(await temporal.connect())


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("server", help="manage the embedded Temporal server")
    s.add_argument("action", choices=["start", "stop", "status"])
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_server)
