"""Tools that llm agents call through the model: the `@tool` decorator and the tool registry.

    from ensemble.authoring.tools import tool

    @tool(description="Looks up an order by its id")
    def lookup_order(order_id: str) -> dict:
        ...

The decorated function stays a plain callable. Its parameters become the tool's JSON Schema (a
single pydantic-model parameter stands for that model's schema), and a parameter annotated
`ToolContext` receives the run, step and, for irreversible tools, the idempotency key. An agent
may call a tool only when its `tools:` list names it (docs/llm.md).
"""

from __future__ import annotations

import inspect
import os
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, create_model

from ensemble.authoring.agents import deploy, load_handler
from ensemble.spec import Effect, ToolSpec
from ensemble.spec.llm import McpServerSpec, ToolApproval

F = TypeVar("F", bound=Callable[..., Any])

_TOOLS: dict[str, ToolSpec] = {}
# MCP servers this process may start or connect to, by name: only those of flow files it loaded on
# purpose (a run request names a server; its command or URL is never taken from the request).
_MCP_SERVERS: dict[str, McpServerSpec] = {}


def deploy_mcp_server(spec: McpServerSpec, base: Path | None = None) -> McpServerSpec:
    """Allow runs of this process to use MCP server `spec.name`. A stdio command's 'python' is this
    interpreter, and its relative paths are taken from the flow file's directory `base`."""
    spec = spec.model_copy(deep=True)
    if spec.command:
        argv = list(spec.command)
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        if base is not None:
            argv = [
                str(base / a) if i and not os.path.isabs(a) and (base / a).exists() else a for i, a in enumerate(argv)
            ]
        spec.command = argv
    _MCP_SERVERS[spec.name] = spec
    return spec


def deployed_mcp_server(name: str) -> McpServerSpec | None:
    return _MCP_SERVERS.get(name)


def any_mcp_servers() -> bool:
    """Whether this process was deployed with any MCP server."""
    return bool(_MCP_SERVERS)


class ToolError(Exception):
    """Raise in a tool to answer the model with an error it can act on ("no order A-1"); the
    agent carries on. Other exceptions fail the agent's attempt, which Temporal retries."""


class ToolContext(BaseModel):
    """What a tool knows about the call it serves."""

    run_id: str
    step: str
    agent: str
    tool: str
    call_id: str = ""
    idempotency_key: str | None = None  # irreversible tools only: the same on every retry of this call


def register_tool(spec: ToolSpec) -> ToolSpec:
    """Add a tool to this process's registry (a later tool of the same name replaces it)."""
    _TOOLS[spec.name] = spec
    return spec


def get_tool(name: str) -> ToolSpec | None:
    return _TOOLS.get(name)


def registered_tools() -> dict[str, ToolSpec]:
    return dict(_TOOLS)


@dataclass(frozen=True)
class Signature:
    """How to call a tool's Python function with the arguments a model sends."""

    fn: Callable[..., Any]
    args_model: type[BaseModel]
    model_param: str | None  # the one pydantic-model parameter, when the function takes one
    context_param: str | None

    def schema(self) -> dict[str, Any]:
        return self.args_model.model_json_schema()

    def call_args(self, arguments: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        """Keyword arguments for the function (raises pydantic.ValidationError on bad arguments)."""
        parsed = self.args_model.model_validate(arguments)
        kwargs: dict[str, Any] = (
            {self.model_param: parsed}
            if self.model_param
            else {k: getattr(parsed, k) for k in type(parsed).model_fields}
        )
        if self.context_param:
            kwargs[self.context_param] = context
        return kwargs


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


def signature(fn: Callable[..., Any]) -> Signature:
    hints = typing.get_type_hints(fn)
    params = [p for p in inspect.signature(fn).parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    context = next((p.name for p in params if hints.get(p.name) is ToolContext), None)
    params = [p for p in params if p.name != context]
    first = hints.get(params[0].name) if params else None
    if len(params) == 1 and inspect.isclass(first) and issubclass(first, BaseModel):
        return Signature(fn, first, params[0].name, context)
    fields = {p.name: (hints.get(p.name, Any), ... if p.default is p.empty else p.default) for p in params}
    model = create_model(f"{getattr(fn, '__name__', 'tool')}_args", __base__=_Args, **fields)  # type: ignore[call-overload]
    return Signature(fn, model, None, context)


def load_signature(handler: str) -> Signature:
    """The signature of the function a tool spec names ('package.module:callable')."""
    return signature(load_handler(handler))


def tool(
    name: str | None = None,
    *,
    description: str = "",
    effect: Effect = "read",
    timeout_s: float = 30.0,
    approval: ToolApproval | dict[str, Any] | None = None,
) -> Callable[[F], F]:
    """Register a Python function (sync or async) as a tool llm agents may be allowed to call.
    It returns JSON-able data or a pydantic model; the model sees its JSON. With `approval`
    ({approvers, quorum, timeout}) people approve each call's exact arguments first (docs/tools.md)."""

    def decorate(fn: F) -> F:
        handler = f"{fn.__module__}:{fn.__qualname__}"
        spec = ToolSpec(
            name=name or fn.__name__,
            description=description or (inspect.getdoc(fn) or "").split("\n\n")[0],
            kind="function",
            handler=handler,
            input_schema=signature(fn).schema(),
            effect=effect,
            timeout_s=timeout_s,
            approval=ToolApproval.model_validate(approval) if isinstance(approval, dict) else approval,
        )
        register_tool(spec)
        deploy(handler, fn)
        fn.__ensemble_tool__ = spec  # type: ignore[attr-defined]
        return fn

    return decorate


def attach_to_agents(
    flow: Any, agents: dict[str, Any], refs: dict[str, tuple[Any, ...]], problem: Callable[[tuple[Any, ...], str], None]
) -> None:
    """When a flow is loaded: give each agent the declarations of the tools it may call (from the
    flow's `tools:`, else the `@tool` registry) and the flow's `llm:` sections. Problems are
    reported with their place: an inline agent's own entry, else the step that uses the agent."""
    declared: dict[str, ToolSpec] = {}
    for i, spec in enumerate(flow.tools):
        if spec.name in declared:
            problem(("tools", i, "name"), f"tool '{spec.name}' is declared twice")
        declared[spec.name] = spec
    for i, spec in enumerate(flow.tools):
        if spec.kind == "function" and spec.input_schema is None:
            try:
                spec.input_schema = load_signature(spec.handler or "").schema()
            except Exception as err:  # an unimportable handler is the flow file's problem to report
                problem(
                    ("tools", i, "handler"), f"cannot load tool handler '{spec.handler}': {type(err).__name__}: {err}"
                )
    servers = {s.name for s in flow.mcp_servers}
    if len(servers) != len(flow.mcp_servers):
        problem(("mcp_servers",), "an MCP server name is declared twice")
    for i, spec in enumerate(flow.tools):
        if spec.kind == "mcp" and spec.server not in servers:
            problem(
                ("tools", i, "server"),
                f"tool '{spec.name}' names MCP server '{spec.server}', which is not under mcp_servers",
            )
    inline = {a.name: i for i, a in enumerate(flow.agents)}
    for name, agent in agents.items():
        specs = []
        for j, tool_name in enumerate(agent.tools):
            found = declared.get(tool_name) or get_tool(tool_name)
            if found is None:
                where = ("agents", inline[name], "tools", j) if name in inline else refs.get(name, ())
                problem(
                    where,
                    f"agent '{name}' lists unknown tool '{tool_name}': declare it under 'tools' or register it with @tool",
                )
            else:
                specs.append(found.model_copy(deep=True))
        agent.tool_specs = specs
    for name, llm in flow.llm.items():
        agent = agents.get(name)
        if agent is None:
            problem(("llm", name), f"'{name}' is not an agent of this flow's steps")
        elif agent.kind == "http":
            problem(("llm", name), f"agent '{name}' is an http agent; llm: versions are for function agents")
        else:
            agent.llm = llm.model_copy(deep=True)
