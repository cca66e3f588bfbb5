"""Model providers over plain httpx: OpenAI-compatible chat completions and Anthropic messages.

A model is named `provider:model`. `openai` is any OpenAI-compatible server, chosen by
OPENAI_BASE_URL (OpenAI, vLLM, LM Studio, llama.cpp server...); `ollama` and `azure` are the
same protocol with their own defaults; `anthropic` speaks the messages API. Keys and base URLs
come from the worker's environment only, and no message built here ever contains a key.

The transcript is kept in one neutral shape (see `loop.py`) and converted to a provider's wire
format per request; replies come back as a `Reply`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, overload

import httpx

from ensemble.activities.egress import check_url
from ensemble.activities.errors import classify_status, parse_retry_after, permanent, retry_after_of, transient
from ensemble.activities.pool import pool
from ensemble.activities.scrub import clip
from ensemble.spec import LLM_PROVIDERS, OUTPUT_TOOL, ToolSpec, Usage

ANTHROPIC_VERSION = "2023-06-01"


@dataclass
class Endpoint:
    """Where and how to call one model. `headers` hold the key: never log or print them."""

    provider: str
    model: str
    wire: str  # "openai" or "anthropic"
    url: str
    headers: dict[str, str] = field(repr=False)
    key_env: str | None = None
    official: bool = False  # the vendor's own service (not a local or compatible server)
    key: str | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"{self.provider}:{self.model}"

    def secrets(self) -> list[str]:
        """What must never appear in a message: the key, and every credential-like env value."""
        return [self.key] if self.key else []  # with every value the worker holds (scrub.secret_values)


@overload
def _env(name: str) -> str | None: ...
@overload
def _env(name: str, default: str) -> str: ...
def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or default


def endpoint(model_ref: str, who: str) -> Endpoint:
    """The endpoint of 'provider:model' from this worker's environment."""
    provider, _, model = model_ref.partition(":")
    if provider not in LLM_PROVIDERS or not model:
        raise permanent(
            f"{who}: model '{model_ref}' is not 'provider:model' with provider one of {', '.join(LLM_PROVIDERS)}",
            kind="BadModel",
        )

    def key(name: str, required: bool) -> str | None:
        value = _env(name)
        if value is None and required:
            raise permanent(
                f"{who}: the worker's environment has no {name} (needed for {model_ref})", kind="MissingSecret"
            )
        return value

    if provider == "anthropic":
        base = _env("ANTHROPIC_BASE_URL", "https://api.anthropic.com").rstrip("/")
        official = base == "https://api.anthropic.com"
        api_key = key("ANTHROPIC_API_KEY", official)
        headers = {"anthropic-version": ANTHROPIC_VERSION, **({"x-api-key": api_key} if api_key else {})}
        return Endpoint(
            provider, model, "anthropic", f"{base}/v1/messages", headers, "ANTHROPIC_API_KEY", official, api_key
        )
    if provider == "azure":
        azure = _env("AZURE_OPENAI_ENDPOINT")
        if azure is None:
            raise permanent(
                f"{who}: the worker's environment has no AZURE_OPENAI_ENDPOINT (needed for {model_ref})",
                kind="MissingSecret",
            )
        version = _env("AZURE_OPENAI_API_VERSION", "2024-10-21")
        api_key = key("AZURE_OPENAI_API_KEY", True)
        url = f"{azure.rstrip('/')}/openai/deployments/{model}/chat/completions?api-version={version}"
        return Endpoint(
            provider, model, "openai", url, {"api-key": api_key or ""}, "AZURE_OPENAI_API_KEY", True, api_key
        )
    if provider == "ollama":
        base = _env("OLLAMA_BASE_URL", "http://127.0.0.1:11434/v1").rstrip("/")
        api_key = key("OLLAMA_API_KEY", False)
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        return Endpoint(
            provider, model, "openai", f"{base}/chat/completions", headers, "OLLAMA_API_KEY", False, api_key
        )
    base = _env("OPENAI_BASE_URL", "https://api.openai.com/v1").rstrip("/")
    official = base == "https://api.openai.com/v1"
    api_key = key("OPENAI_API_KEY", official)
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    return Endpoint(provider, model, "openai", f"{base}/chat/completions", headers, "OPENAI_API_KEY", official, api_key)


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


# ---------------------------------------------------------------- wire formats


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


# ---------------------------------------------------------------- one call


_CONTEXT = re.compile(
    r"context[_ ]length|context window|maximum context|prompt is too long|too many (input )?tokens|max_tokens_exceeded",
    re.I,
)
_FILTERED = re.compile(r"content[_ ]?(filter|policy|management)|safety system|responsibleaipolicy", re.I)


def _error_detail(response: httpx.Response, secrets: list[str]) -> tuple[str, str]:
    """(code, message) of a provider's error reply, whatever its shape: scrubbed, then cut."""
    try:
        data = response.json()
    except ValueError:
        return "", clip(response.text, 300, secrets)
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict):
        return clip(str(err.get("code") or err.get("type") or ""), 100, secrets), clip(
            str(err.get("message") or ""), 300, secrets
        )
    if isinstance(err, str):
        return "", clip(err, 300, secrets)
    return "", clip(json.dumps(data), 300, secrets)


def classify(ep: Endpoint, response: httpx.Response, who: str) -> Exception:
    """A provider's error reply as a retryable or non-retryable failure (never with a key in it)."""
    status = response.status_code
    code, message = _error_detail(response, ep.secrets())
    detail = message
    if status in (401, 403):
        where = f"check {ep.key_env} in the worker's environment" if ep.key_env else "check the worker's environment"
        return permanent(f"{who}: {ep.provider} refused the request (HTTP {status}): {where}", kind="PermissionDenied")
    if status == 529:  # Anthropic: overloaded
        return transient(
            f"{who}: {ep.provider} is overloaded (HTTP 529)",
            kind="ServiceUnavailable",
            retry_after_s=parse_retry_after(retry_after_of(response.headers)),
        )
    if 400 <= status < 500 and status not in (408, 409, 425, 429):
        if code == "context_length_exceeded" or _CONTEXT.search(message):
            return permanent(
                f"{who}: the conversation is longer than the model's context window (HTTP {status}): {detail}",
                kind="ContextLengthExceeded",
            )
        if code in ("content_filter", "content_policy_violation") or _FILTERED.search(message):
            return permanent(
                f"{who}: the provider's content filter refused the request (HTTP {status}): {detail}",
                kind="ContentRefused",
            )
        if status == 404:
            return permanent(
                f"{who}: {ep.provider} does not know model '{ep.model}' or the URL (HTTP 404): {detail}",
                kind="ModelNotFound",
            )
    if status == 409:
        return transient(f"{who}: {ep.provider} failed with HTTP 409: {detail}", kind="ServiceUnavailable")
    return classify_status(
        status, who=f"{who}: {ep.provider}", detail=detail, retry_after=retry_after_of(response.headers)
    )


async def complete(ep: Endpoint, req: Request, who: str) -> Reply:
    """One model call: the request in the provider's format, its reply parsed, failures classified."""
    body = anthropic_body(ep, req) if ep.wire == "anthropic" else openai_body(ep, req)
    await check_url(ep.url, who)
    try:
        response = await pool("models").post(
            ep.url, json=body, headers=ep.headers, timeout=httpx.Timeout(req.timeout_s, connect=10.0)
        )
    except httpx.TimeoutException:
        raise transient(f"{who}: {ep.provider} did not answer in time", kind="Timeout") from None
    except httpx.TransportError as err:
        raise transient(f"{who}: {ep.provider} is unreachable: {type(err).__name__}", kind="Unreachable") from None
    if response.status_code >= 300:
        raise classify(ep, response, who)
    try:
        data = response.json()
        return parse_anthropic(data) if ep.wire == "anthropic" else parse_openai(data)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        snippet = clip(response.text, 120, ep.secrets())
        raise transient(
            f"{who}: {ep.provider} sent a reply that is not a {ep.wire} completion: {snippet!r}", kind="MalformedReply"
        ) from None
