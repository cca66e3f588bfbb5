"""Tools from MCP servers (docs/tools.md), through the official `mcp` SDK's client.

A worker keeps one session per MCP server (per event loop), and closes them when it shuts down: a
stdio server is a process it starts with the command of the flow file it was deployed with, a streamable HTTP server a URL that passes
the egress allow-list, with headers from the `${env:...}` allow-list. The server's tools are listed
once per session. When a session breaks (the server crashed or restarted), the next call opens a
new one and lists again; a server that cannot be reached fails the attempt as retryable, so the run
waits it out instead of failing. A tool the server no longer offers is a non-retryable error
naming server and tool.

An irreversible tool's call carries its idempotency key in the request's `_meta`
(`ensemble/idempotency_key`, with `ensemble/run_id`, `ensemble/step` and `ensemble/call_id`):
the same key on every retry, redrive and fork of that call, so the server can refuse to act twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from temporalio import activity
from temporalio.exceptions import ApplicationError

from ensemble.activities.egress import check_url
from ensemble.activities.errors import permanent, transient
from ensemble.activities.scrub import clip, resolve_env_refs, scrub
from ensemble.authoring.tools import deployed_mcp_server
from ensemble.spec.llm import McpServerSpec

if TYPE_CHECKING:
    from mcp import Client

log = logging.getLogger("ensemble.mcp")


def preload() -> None:
    """Import the MCP SDK (about a second of CPU): the worker does it at start when its deployed
    flows name MCP servers, so the first tool call does not hold the event loop; a process that
    never talks to an MCP server (the CLI, a worker without MCP tools) never pays it, and the
    worker a command runs for its own run loads it at that run's first MCP tool call."""
    import mcp.client.stdio
    import mcp.client.streamable_http
    import mcp.shared._httpx_utils
    import mcp.shared.exceptions  # noqa: F401


META_KEY = "ensemble/idempotency_key"


def _why(err: BaseException) -> str:
    """One line naming a (possibly grouped) connection failure."""
    while getattr(err, "exceptions", None):  # an exception group (the SDK's task groups raise them)
        err = err.exceptions[0]  # type: ignore[attr-defined]
    return scrub(f"{type(err).__name__}: {err}" if str(err) else type(err).__name__)


@dataclass
class Session:
    """One open session with one MCP server, held by a task of its own (the SDK's transports are
    entered and left in the same task)."""

    spec: McpServerSpec
    client: Client | None = None
    tools: dict[str, Any] = field(default_factory=dict)
    ready: asyncio.Future[None] | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    broken: bool = False

    async def _target(self, who: str) -> Any:
        from mcp.client.stdio import StdioServerParameters
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        spec = self.spec
        if spec.command:
            env = {k: resolve_env_refs(v, who) for k, v in spec.env.items()}
            return StdioServerParameters(command=spec.command[0], args=spec.command[1:], env=env or None)
        await check_url(spec.url or "", who)
        headers = {k: resolve_env_refs(v, who) for k, v in spec.headers.items()}
        return streamable_http_client(spec.url or "", http_client=create_mcp_http_client(headers=headers))

    async def _hold(self, target: Any) -> None:
        from mcp import Client

        assert self.ready is not None
        try:
            async with Client(target, mode="legacy", cache=None) as client:
                listed = await client.list_tools()
                self.tools = {t.name: t for t in listed.tools}
                self.client = client
                self.ready.set_result(None)
                await self.stop.wait()
        except BaseException as err:  # the server is gone, or never came up
            if not self.ready.done():
                self.ready.set_exception(err)
            elif not self.stop.is_set() and not isinstance(err, asyncio.CancelledError):
                log.warning("MCP server '%s': the session ended: %s", self.spec.name, _why(err))
            if isinstance(err, asyncio.CancelledError):
                raise
        finally:
            self.broken, self.client = True, None

    async def open(self, who: str) -> None:
        self.ready = asyncio.get_running_loop().create_future()
        self.task = asyncio.create_task(self._hold(await self._target(who)), name=f"mcp-session-{self.spec.name}")
        try:
            await asyncio.wait_for(asyncio.shield(self.ready), self.spec.timeout_s)
        except asyncio.TimeoutError:
            await self.close()
            raise transient(
                f"{who}: MCP server '{self.spec.name}' did not answer within {self.spec.timeout_s:g}s",
                kind="ToolUnavailable",
            ) from None
        except ApplicationError:
            raise
        except BaseException as err:
            await self.close()
            raise transient(
                f"{who}: cannot connect to MCP server '{self.spec.name}': {_why(err)}", kind="ToolUnavailable"
            ) from None

    async def close(self) -> None:
        self.broken = True
        self.stop.set()
        if self.task is not None and not self.task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self.task), 5)
            except (asyncio.TimeoutError, Exception):
                self.task.cancel()
                with contextlib.suppress(BaseException):
                    await self.task


class Pool:
    """The sessions of this event loop, by server name."""

    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}
        self.locks: dict[str, asyncio.Lock] = {}

    async def session(self, name: str, who: str) -> Session:
        spec = deployed_mcp_server(name)
        if spec is None:
            raise permanent(
                f"{who}: MCP server '{name}' is not deployed to this worker: "
                "start the worker with the flow file that declares it",
                kind="ToolNotFound",
            )
        lock = self.locks.setdefault(name, asyncio.Lock())
        async with lock:
            current = self.sessions.get(name)
            if current is not None and not current.broken and current.spec == spec:
                return current
            if current is not None:
                await current.close()
            fresh = Session(spec)
            await fresh.open(who)
            self.sessions[name] = fresh
            return fresh

    async def drop(self, session: Session) -> None:
        if self.sessions.get(session.spec.name) is session:
            del self.sessions[session.spec.name]
        await session.close()

    async def close(self) -> None:
        for session in list(self.sessions.values()):
            await self.drop(session)


_POOLS: dict[int, Pool] = {}


def pool() -> Pool:
    loop = asyncio.get_running_loop()
    return _POOLS.setdefault(id(loop), Pool())


async def close_sessions() -> None:
    """Close every MCP session of this event loop (a stdio server's process ends with its session).
    The worker calls it once its last agent on this loop has finished."""
    held = _POOLS.pop(id(asyncio.get_running_loop()), None)
    if held is not None:
        await held.close()


async def describe(server: str, remote: str, who: str) -> tuple[str, dict[str, Any]]:
    """The description and input schema the server gives tool `remote` (from its session's listing)."""
    session = await pool().session(server, who)
    tool = session.tools.get(remote)
    if tool is None:
        raise _gone(session, remote, who)
    return tool.description or "", dict(tool.input_schema or {"type": "object"})


def _gone(session: Session, remote: str, who: str) -> ApplicationError:
    offered = ", ".join(sorted(session.tools)) or "none"
    return permanent(
        f"{who}: MCP server '{session.spec.name}' does not offer tool '{remote}' (it offers: {offered})",
        kind="ToolGone",
    )


def _text(result: Any) -> str:
    if getattr(result, "structured_content", None) is not None:
        return json.dumps(result.structured_content, ensure_ascii=False)
    parts = []
    for item in result.content or []:
        text = getattr(item, "text", None)
        parts.append(text if isinstance(text, str) else f"[{getattr(item, 'type', 'content')} content]")
    return "\n".join(parts)


async def call(
    server: str, remote: str, arguments: dict[str, Any], meta: dict[str, Any], timeout_s: float, who: str
) -> tuple[str, bool]:
    """Call tool `remote` of MCP server `server`: its text and whether it is an error for the model.
    A broken session is reopened once (the server restarted); a server that stays unreachable
    fails the attempt, retryably."""
    from mcp.shared.exceptions import MCPError
    from mcp_types import CONNECTION_CLOSED, RequestParamsMeta

    label = f"{who}: tool '{remote}' of MCP server '{server}'"
    for attempt in (1, 2):
        session = await pool().session(server, who)
        if remote not in session.tools:
            raise _gone(session, remote, who)
        client = session.client
        if client is None:
            await pool().drop(session)
            continue
        try:
            # RequestParamsMeta is an open TypedDict (any extra key); the SDK casts a plain dict the same way
            result = await asyncio.wait_for(
                client.call_tool(remote, arguments, meta=cast(RequestParamsMeta, meta)), timeout_s
            )
        except asyncio.TimeoutError:
            await pool().drop(session)  # a hung server gets a fresh session next time
            raise transient(f"{label} took longer than {timeout_s:g}s", kind="ToolTimeout") from None
        except MCPError as err:
            if (
                err.code != CONNECTION_CLOSED
            ):  # the server answered with a protocol error (bad arguments...): the model may act on it
                return f"error: {clip(scrub(err.message), 2000)}", True
            await pool().drop(session)
            if attempt == 2:
                raise transient(f"{label} is unreachable: the connection closed", kind="ToolUnavailable") from None
            log.warning("%s: the connection closed under the call; reconnecting", label)
            continue
        except Exception as err:  # the session broke under the call
            await pool().drop(session)
            if attempt == 2:
                raise transient(f"{label} is unreachable: {_why(err)}", kind="ToolUnavailable") from None
            log.warning("%s: the session broke (%s); reconnecting", label, _why(err))
            continue
        text = scrub(_text(result))
        return (f"error: {text}" if result.is_error else text), bool(result.is_error)
    raise transient(f"{label} is unreachable", kind="ToolUnavailable")


async def call_tool(
    server: str, tool: str, arguments: dict[str, Any], *, who: str = "agent", timeout_s: float = 30.0
) -> Any:
    """Call a tool of a deployed MCP server from an agent's own code (not through a model): its JSON
    result (or its text). An error the tool reports fails the agent, non-retryably."""
    meta: dict[str, Any] = {}
    if activity.in_activity():
        info = activity.info()
        meta = {"ensemble/run_id": info.workflow_id, "ensemble/step": info.activity_id}
    text, is_error = await call(server, tool, arguments, meta, timeout_s, who)
    if is_error:
        raise permanent(f"{who}: tool '{tool}' of MCP server '{server}' failed: {clip(text, 500)}", kind="ToolFailed")
    try:
        return json.loads(text)
    except ValueError:
        return text
