"""The shapes of model-backed agents: tools, the `llm` settings of an agent, prices and budgets
(docs/llm.md). Re-exported by ensemble.spec."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from ensemble.spec.base import Effect, _Strict
from ensemble.spec.gate import APPROVER_RE, Duration

LLM_PROVIDERS = ("openai", "anthropic", "azure", "ollama")
MODEL_RE = r"^[a-z][a-z0-9_-]*:\S+$"
TOOL_NAME_RE = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"  # what model providers accept
OUTPUT_TOOL = "final_answer"  # reserved: how an Anthropic model hands over structured output


SERVER_NAME_RE = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"


class McpServerSpec(_Strict):
    """An MCP server a flow's tools come from (docs/tools.md): a command the worker starts and talks
    to over stdio, or a streamable HTTP URL. A worker uses only the servers of the flow files it was
    started with, by name: the command or URL in a run request is never used."""

    name: str = Field(pattern=SERVER_NAME_RE)
    command: list[str] | None = Field(
        None,
        description="stdio: the argv the worker starts ('python' is the worker's own interpreter; paths relative to the flow file)",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="stdio: extra environment; values may use ${env:NAME}"
    )
    url: str | None = Field(None, description="streamable HTTP: the server's endpoint (through the egress allow-list)")
    headers: dict[str, str] = Field(
        default_factory=dict, description="streamable HTTP: header values may use ${env:NAME}"
    )
    timeout_s: float = Field(30.0, gt=0, description="connecting and listing tools")

    @model_validator(mode="after")
    def _transport(self) -> McpServerSpec:
        if bool(self.command) == bool(self.url):
            raise ValueError(
                "an MCP server needs either command: [argv...] (stdio) or url: 'http(s)://...' (streamable HTTP)"
            )
        if self.url and not re.match(r"^https?://", self.url):
            raise ValueError("an MCP server url must be 'http(s)://...'")
        return self


class ToolApproval(_Strict):
    """People approve each call of the tool, with its exact arguments, before it runs (docs/tools.md)."""

    approvers: list[Annotated[str, Field(pattern=APPROVER_RE)]] = Field(min_length=1)
    quorum: int = Field(1, ge=1)
    timeout: Duration | None = Field(None, description="no decision by then: the call is refused and the model told so")


class ToolSpec(_Strict):
    """A tool llm agents may call through the model (docs/llm.md, docs/tools.md): a Python function,
    an HTTP endpoint or a tool of an MCP server. An agent may call only the tools its `tools:` list names."""

    name: str = Field(pattern=TOOL_NAME_RE)
    description: str = ""
    kind: Literal["function", "http", "mcp"] = "function"
    handler: str | None = Field(None, description="kind=function: 'package.module:callable'")
    server: str | None = Field(None, description="kind=mcp: the name of one of the flow's mcp_servers")
    remote: str | None = Field(None, description="kind=mcp: the tool's name on the server (default: name)")
    approval: ToolApproval | None = Field(None, description="people approve each call's exact arguments before it runs")
    url: str | None = Field(None, description="kind=http: the endpoint the arguments are POSTed to as JSON")
    headers: dict[str, str] = Field(default_factory=dict, description="kind=http: header values may use ${env:NAME}")
    input_schema: dict[str, Any] | None = Field(
        None, description="JSON Schema of the arguments (default: the handler's signature)"
    )
    effect: Effect = Field(
        "read", description="irreversible tools get an idempotency key that is the same on every retry"
    )
    timeout_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _kind_fields(self) -> ToolSpec:
        if self.name == OUTPUT_TOOL:
            raise ValueError(f"tool name '{OUTPUT_TOOL}' is reserved")
        if self.kind == "function" and (not self.handler or not re.match(r"^[\w.]+:[\w.]+$", self.handler)):
            raise ValueError("a function tool needs handler: 'package.module:callable'")
        if self.kind == "http" and (not self.url or not re.match(r"^https?://", self.url)):
            raise ValueError("an http tool needs url: 'http(s)://...'")
        if self.kind == "mcp" and not self.server:
            raise ValueError("an mcp tool needs server: the name of one of the flow's mcp_servers")
        return self


class LlmSpec(_Strict):
    """How a model runs an agent: its instructions, its prompt and its limits (docs/llm.md)."""

    instructions: str = Field("", description="the system prompt")
    prompt: str | None = Field(
        None,
        description="the user message: text with {path} placeholders over the step input (default: the input as JSON)",
    )
    output_model: str | None = Field(
        None,
        description="'package.module:Model' the reply is validated into (default: output_schema, else the handler's return model)",
    )
    max_tool_turns: int = Field(
        8, ge=0, le=100, description="model replies with tool calls before a final answer is required"
    )
    max_reasks: int = Field(2, ge=0, le=10, description="how often a reply that fails the output schema is sent back")
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int = Field(2048, ge=1, description="the most tokens of one reply")


class Price(_Strict):
    """What a model costs, in USD per million tokens."""

    prompt: float = Field(ge=0)
    completion: float = Field(ge=0)


class BudgetSpec(_Strict):
    """A per-run limit on model use. Once the run's total reaches it, no further model-backed
    agent starts (docs/llm.md#budgets)."""

    tokens: int | None = Field(None, ge=0, description="total tokens (prompt + completion)")
    usd: float | None = Field(None, ge=0, description="money, priced with `prices`")
    prices: dict[str, Price] = Field(
        default_factory=dict, description="'provider:model', 'provider:*' or '*' -> USD per million tokens"
    )

    approvers: list[Annotated[str, Field(pattern=APPROVER_RE)]] = Field(
        default_factory=list,
        description="who may raise an exhausted budget: the run then waits at gate 'budget' instead of failing",
    )
    quorum: int = Field(1, ge=1)
    timeout: Duration | None = Field(None, description="how long the budget gate waits before the run fails")
    raise_tokens: int | None = Field(None, ge=1, description="tokens an approval adds (default: `tokens` again)")
    raise_usd: float | None = Field(None, gt=0, description="money an approval adds (default: `usd` again)")

    @model_validator(mode="after")
    def _limits(self) -> BudgetSpec:
        if self.tokens is None and self.usd is None:
            raise ValueError("a budget needs tokens: N and/or usd: AMOUNT")
        if self.usd is not None and not self.prices:
            raise ValueError(
                "a budget in usd needs prices: {'provider:model': {prompt: USD_PER_1M, completion: USD_PER_1M}}"
            )
        return self


def held_call(tool: str, arguments: Any) -> dict[str, Any]:
    """What approvers of a tool call are shown, and what their proofs bind (by its digest)."""
    return {"tool": tool, "arguments": arguments}
