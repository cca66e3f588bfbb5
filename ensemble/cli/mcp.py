"""`starter.py mcp [--http PORT]`: Ensemble itself as an MCP server (docs/tools.md), so an assistant can
list flows, start a run, follow it and list pending approvals. Deciding stays with people: there
is no decide tool (a decision needs a person's proof). Every tool is a call of `EnsembleClient`.

Over stdio by default (an assistant starts the command); `--http PORT` serves streamable HTTP on
127.0.0.1 (`--host` to change, at your own risk: the tools start runs).
"""

from __future__ import annotations

import argparse
from typing import Any

from ensemble.client import EnsembleClient
from ensemble.spec.errors import EnsembleError, InputError


def build_server(connect: Any = None) -> Any:
    """The MCP server, its tools over one EnsembleClient (connected on first use)."""
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    app = MCPServer(
        "ensemble",
        instructions="Ensemble runs AI agent flows durably. List flows, start runs, follow them, and see which "
        "approvals wait on people. Decisions are made by people with `starter.py approve`, not here.",
        log_level="WARNING",
    )
    state: dict[str, EnsembleClient] = {}

    async def client() -> EnsembleClient:
        if "client" not in state:
            state["client"] = await (connect or EnsembleClient.connect)()
        return state["client"]

    @app.tool(description="The flows this Ensemble can run: name, description, patterns, agents")
    def list_flows() -> list[dict[str, Any]]:
        return [f.model_dump(mode="json") for f in EnsembleClient.flows()]

    @app.tool(description="Start a run of a flow (by name) with its input; returns the run id")
    async def start_run(flow: str, input: Any = None, run_id: str | None = None) -> dict[str, Any]:
        known = {f.name for f in EnsembleClient.flows()}
        if flow not in known:  # a name only: a path would make this process read files it was not given
            raise ToolError(f"no flow named '{flow}' (flows: {', '.join(sorted(known))})")
        try:
            started = await (await client()).start(flow, input, run_id=run_id)
        except EnsembleError as err:  # bad input, a run id already used...: said in one line
            raise ToolError(str(err)) from None
        return started.model_dump(mode="json")

    @app.tool(description="Where a run stands: its status, steps, gates, decisions, usage, result or error")
    async def run_status(run_id: str) -> dict[str, Any]:
        try:
            return (await (await client()).status(run_id)).model_dump(mode="json")
        except EnsembleError as err:
            raise ToolError(str(err)) from None

    @app.tool(description="Approvals waiting on people (only those an approver may decide, when given)")
    async def pending_approvals(approver: str | None = None) -> list[dict[str, Any]]:
        return await (await client()).pending(approver)

    return app


async def cmd_mcp(args: argparse.Namespace) -> int:
    app = build_server()
    if args.http is None:
        await app.run_stdio_async()
        return 0
    if not 0 < args.http < 65536:
        raise InputError(f"--http {args.http}: give a port between 1 and 65535")
    await app.run_streamable_http_async(host=args.host, port=args.http)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("mcp", help="serve Ensemble as an MCP server (stdio, or streamable HTTP with --http PORT)")
    s.add_argument(
        "--http", type=int, default=None, metavar="PORT", help="serve streamable HTTP on http://HOST:PORT/mcp"
    )
    s.add_argument("--host", default="127.0.0.1", help="the address --http binds (default 127.0.0.1)")
    s.set_defaults(fn=cmd_mcp)
