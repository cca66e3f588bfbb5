"""Model requests and replies: one neutral shape (`Request`, `Reply`; the transcript as `loop.py`
keeps it) converted to a provider's wire format per request (OpenAI-compatible chat completions,
Anthropic messages) and parsed back. No message built here ever contains a key."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ensemble.activities.llm.endpoints import Endpoint
from ensemble.spec import OUTPUT_TOOL, ToolSpec, Usage


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: Any  # a dict, or the raw text when the model sent arguments that are not JSON


@dataclass
class Reply:
    text: str
    tool_calls: list[ToolCall]
    usage: Usage
    finish: str  # stop | tool_calls | length | refusal
    refusal: str | None = None


@dataclass
class Request:
    system: str
    transcript: list[dict[str, Any]]
    tools: list[ToolSpec]
    output_schema: dict[str, Any] | None  # the structured output wanted, its root an object
    final: bool  # no more tool calls: the model must answer now
    temperature: float | None
    max_tokens: int
    timeout_s: float


def _schema_or_empty(schema: dict[str, Any] | None) -> dict[str, Any]:
    return schema if schema else {"type": "object", "properties": {}}


def openai_body(ep: Endpoint, req: Request) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": req.system}] if req.system else []
    for entry in req.transcript:
        if entry["role"] == "user":
            messages.append({"role": "user", "content": entry["text"]})
        elif entry["role"] == "assistant":
            msg: dict[str, Any] = {
                "role": "assistant",
                "content": entry.get("text") or ("" if not entry.get("tool_calls") else None),
            }
            if entry.get("tool_calls"):
                msg["tool_calls"] = [
                    {
                        "id": c["id"],
                        "type": "function",
                        "function": {
                            "name": c["name"],
                            "arguments": c["arguments"]
                            if isinstance(c["arguments"], str)
                            else json.dumps(c["arguments"]),
                        },
                    }
                    for c in entry["tool_calls"]
                ]
            messages.append(msg)
        else:
            messages += [{"role": "tool", "tool_call_id": r["id"], "content": r["content"]} for r in entry["results"]]
    body: dict[str, Any] = {"model": ep.model, "messages": messages}
    body["max_completion_tokens" if ep.official else "max_tokens"] = req.max_tokens
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": _schema_or_empty(t.input_schema),
                },
            }
            for t in req.tools
        ]
        if req.final:
            body["tool_choice"] = "none"
    if req.output_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": req.output_schema},
        }
    return body


def parse_openai(data: Any) -> Reply:
    choice = data["choices"][0]
    msg = choice["message"]
    content = msg.get("content") or ""
    if isinstance(content, list):  # some compatible servers send content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    calls = []
    for i, tc in enumerate(msg.get("tool_calls") or []):
        fn = tc["function"]
        raw = fn.get("arguments") or "{}"
        try:
            args = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            args = raw
        calls.append(ToolCall(id=tc.get("id") or f"call_{i}", name=fn["name"], arguments=args))
    usage = data.get("usage") or {}
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    finish = {
        "tool_calls": "tool_calls",
        "function_call": "tool_calls",
        "length": "length",
        "content_filter": "refusal",
    }.get(choice.get("finish_reason") or "stop", "stop")
    refusal = msg.get("refusal") or ("the provider's content filter stopped the reply" if finish == "refusal" else None)
    return Reply(
        content,
        calls,
        Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion),
        "refusal" if refusal else finish,
        refusal,
    )


def output_tool(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": OUTPUT_TOOL,
        "description": "Hand over your final answer. Call this exactly once, when you are done, with the answer as its input.",
        "input_schema": schema,
    }


def anthropic_body(ep: Endpoint, req: Request) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if messages and messages[-1]["role"] == role:  # the API wants roles to alternate
            messages[-1]["content"] += blocks
        else:
            messages.append({"role": role, "content": blocks})

    for entry in req.transcript:
        if entry["role"] == "user":
            add("user", [{"type": "text", "text": entry["text"]}])
        elif entry["role"] == "assistant":
            blocks = [{"type": "text", "text": entry["text"]}] if entry.get("text") else []
            blocks += [
                {
                    "type": "tool_use",
                    "id": c["id"],
                    "name": c["name"],
                    "input": c["arguments"] if isinstance(c["arguments"], dict) else {},
                }
                for c in entry.get("tool_calls") or []
            ]
            add("assistant", blocks or [{"type": "text", "text": "(no reply)"}])
        else:
            add(
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": r["id"],
                        "content": r["content"],
                        "is_error": bool(r.get("is_error")),
                    }
                    for r in entry["results"]
                ],
            )
    body: dict[str, Any] = {"model": ep.model, "max_tokens": req.max_tokens, "messages": messages}
    if req.system:
        body["system"] = req.system
    if req.temperature is not None:
        body["temperature"] = req.temperature
    tools = [
        {"name": t.name, "description": t.description, "input_schema": _schema_or_empty(t.input_schema)}
        for t in req.tools
    ]
    if req.output_schema is not None:
        tools.append(output_tool(req.output_schema))
    if tools:
        body["tools"] = tools
        if req.output_schema is not None:
            forced = req.final or len(tools) == 1
            body["tool_choice"] = {"type": "tool", "name": OUTPUT_TOOL} if forced else {"type": "any"}
        elif req.final:
            body["tool_choice"] = {"type": "none"}
    return body


def parse_anthropic(data: Any) -> Reply:
    blocks = data["content"]
    text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    calls = [
        ToolCall(id=b["id"], name=b["name"], arguments=b.get("input")) for b in blocks if b.get("type") == "tool_use"
    ]
    usage = data.get("usage") or {}
    prompt = sum(
        int(usage.get(k) or 0) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    completion = int(usage.get("output_tokens") or 0)
    stop = data.get("stop_reason") or "end_turn"
    finish = {"tool_use": "tool_calls", "max_tokens": "length", "refusal": "refusal"}.get(stop, "stop")
    refusal = (text.strip() or "the model declined to answer") if finish == "refusal" else None
    return Reply(
        text,
        calls,
        Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion),
        finish,
        refusal,
    )
