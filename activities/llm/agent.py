"""The `llm` executor: an agent answered by a model, and a function agent's model-backed version
when the worker sets ENSEMBLE_LLM (see `activities.executors.run_agent`)."""

from __future__ import annotations

import inspect
import json
import os
import re
import typing
from typing import Any

from pydantic import BaseModel
from temporalio import activity

from ensemble.activities import mcp
from ensemble.activities.errors import permanent
from ensemble.activities.executors import executor
from ensemble.activities.llm.endpoints import endpoint
from ensemble.activities.llm.loop import Job, Loop
from ensemble.activities.llm.output import Output
from ensemble.authoring.agents import load_handler
from ensemble.logic.state import StateError, lookup
from ensemble.spec import OUTPUT_TOOL, AgentCall, AgentResult, AgentSpec, LlmSpec, ToolSpec, protocol

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z0-9_$*][A-Za-z0-9_.$*-]*)(\??)\}")


def model_of(agent: AgentSpec) -> str | None:
    """The model an agent runs on this worker: its own, else ENSEMBLE_LLM."""
    own = agent.model if agent.kind == "llm" else None
    return own or os.environ.get("ENSEMBLE_LLM", "").strip() or None


def render(prompt: str | None, data: Any, who: str) -> str:
    """The user message: `prompt` with each `{path}` replaced by that part of the step input
    (`{$}` is all of it; objects and lists as JSON; `{path?}` is empty when the input lacks it
    or it is null), `{{` and `}}` for literal braces. With no prompt, the input itself."""
    if prompt is None:
        return data if isinstance(data, str) else "Input:\n" + json.dumps(data, indent=2, ensure_ascii=False)

    def fill(match: re.Match[str]) -> str:
        token, path = match.group(0), match.group(1)
        if path is None:
            return token[0]
        try:
            value = data if path == "$" else lookup(data, path)
        except StateError:
            value = None
            if not match.group(2):
                raise permanent(
                    f"{who}: prompt placeholder {{{path}}} is not in the step input", kind="InvalidInput"
                ) from None
        if value is None and match.group(2):
            return ""
        return value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)

    return _PLACEHOLDER.sub(fill, prompt)


def _model_class(path: str, who: str) -> type[BaseModel]:
    try:
        model = load_handler(path)
    except Exception as err:  # not importable on this worker
        raise permanent(
            f"{who}: cannot load output model {path!r}: {type(err).__name__}: {err}", kind="AgentNotFound"
        ) from None
    if not (inspect.isclass(model) and issubclass(model, BaseModel)):
        raise permanent(f"{who}: output_model {path!r} is not a pydantic model", kind="AgentNotFound")
    return model


def output_of(agent: AgentSpec, llm: LlmSpec, who: str) -> Output | None:
    """What the answer must be: llm.output_model, else (function agents) the handler's return
    model, else output_schema; None for free text."""
    if llm.output_model:
        return Output.of_model(_model_class(llm.output_model, who))
    if agent.kind == "function" and agent.handler:
        try:
            returns = typing.get_type_hints(load_handler(agent.handler)).get("return")
        except Exception as err:  # the handler is not importable here
            raise permanent(
                f"{who}: cannot load handler {agent.handler!r} on this worker: {err}", kind="AgentNotFound"
            ) from None
        if inspect.isclass(returns) and issubclass(returns, BaseModel):
            return Output.of_model(returns)
    return Output.of_schema(agent.output_schema) if agent.output_schema else None


def system_prompt(llm: LlmSpec, output: Output | None, wire: str) -> str:
    parts = [llm.instructions.strip()] if llm.instructions.strip() else []
    if output is not None:
        how = (
            f"call the {OUTPUT_TOOL} tool with it"
            if wire == "anthropic"
            else "reply with only a JSON object, no other text"
        )
        parts.append(
            f"When you give your final answer, {how}. It must match this JSON Schema:\n{json.dumps(output.schema)}"
        )
    return "\n\n".join(parts)


async def describe_mcp_tools(tools: dict[str, ToolSpec], who: str) -> None:
    """Fill in what the flow did not declare of its MCP tools (description, input schema) from the
    server's listing (once per session)."""
    for name, spec in tools.items():
        if spec.kind == "mcp" and (spec.input_schema is None or not spec.description):
            description, schema = await mcp.describe(spec.server or "", spec.remote or spec.name, who)
            tools[name] = spec.model_copy(
                update={"description": spec.description or description, "input_schema": spec.input_schema or schema}
            )


@executor("llm")
async def run_llm(call: AgentCall) -> AgentResult:
    agent, ctx = call.agent, call.context
    who = f"agent '{agent.name}'"
    llm = agent.llm or LlmSpec()
    model = model_of(agent)
    if model is None:
        raise permanent(
            f"{who} has no model: set model: 'provider:model' on the agent, or ENSEMBLE_LLM on the worker",
            kind="NoModel",
        )
    ep = endpoint(model, who)
    output = output_of(agent, llm, who)
    info = activity.info()
    assert info.workflow_id is not None  # an agent runs only as an activity of a flow's workflow
    tools = {s.name: s for s in agent.tool_specs if s.name in agent.tools}
    await describe_mcp_tools(tools, who)
    job = Job(
        who=who,
        endpoint=ep,
        agent=agent.name,
        llm=llm,
        system=system_prompt(llm, output, ep.wire),
        prompt=render(llm.prompt, call.input, who),
        output=output,
        tools=tools,
        verdict=call.verdict,
        run_id=ctx.run_id,
        step=ctx.step,
        key_base=getattr(ctx, "idempotency_key", None) or protocol.idempotency_key(info.workflow_id, info.activity_id),
        timeout_s=agent.timeout_s,
    )
    return await Loop(job).run()
