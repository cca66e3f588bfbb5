"""Running the tools a model asks for: Python functions, HTTP endpoints and MCP servers' tools.

What the model gets back is text: the tool's JSON result, or an error it can act on (bad
arguments, `ToolError`, a 4xx from an HTTP tool). A transient failure (a timeout, a 5xx, a 429, an
exception the tool did not mean for the model) fails the agent's attempt instead: Temporal
retries it, and the retry resumes from the transcript, so finished calls are not repeated.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
from dataclasses import dataclass
from typing import Any

import httpx
import jsonschema
from pydantic import ValidationError
from pydantic_core import to_jsonable_python
from temporalio.exceptions import ApplicationError

from ensemble.activities import mcp
from ensemble.activities.egress import check_url
from ensemble.activities.errors import parse_retry_after, permanent, retry_after_of, transient
from ensemble.activities.pool import pool
from ensemble.activities.scrub import clip, resolve_env_refs, scrub
from ensemble.authoring.tools import Signature, ToolContext, ToolError, load_signature
from ensemble.spec import ToolSpec

MAX_RESULT_CHARS = 16_000


@dataclass
class Outcome:
    content: str
    is_error: bool = False


@functools.lru_cache(maxsize=256)
def _signature(handler: str) -> Signature:
    return load_signature(handler)


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(to_jsonable_python(value), ensure_ascii=False)
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + f"... [cut: the result has {len(text)} characters]"
    return text


def _brief(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(root)"
    return f"{where}: {first['msg']}" + (f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else "")


async def run_tool(spec: ToolSpec, arguments: Any, ctx: ToolContext, who: str) -> Outcome:
    """Run one allowed tool call. Raises ApplicationError when the attempt should fail."""
    if not isinstance(arguments, dict):
        return Outcome(
            f"error: the arguments of {spec.name} must be a JSON object, got: {clip(str(arguments), 200)}", True
        )
    if spec.input_schema:
        try:
            jsonschema.validate(arguments, spec.input_schema)
        except jsonschema.ValidationError as err:
            where = ".".join(str(p) for p in err.absolute_path) or "(root)"
            return Outcome(
                f"error: the arguments do not match the schema of {spec.name} at {where}: {err.message}", True
            )
        except jsonschema.SchemaError as err:
            raise permanent(
                f"{who}: tool '{spec.name}' has an invalid input_schema: {err.message}", kind="BadTool"
            ) from None
    if spec.kind == "http":
        return await _run_http(spec, arguments, ctx, who)
    if spec.kind == "mcp":
        return await _run_mcp(spec, arguments, ctx, who)
    return await _run_function(spec, arguments, ctx, who)


async def _run_function(spec: ToolSpec, arguments: dict[str, Any], ctx: ToolContext, who: str) -> Outcome:
    try:
        sig = _signature(spec.handler or "")
    except Exception as err:  # this worker lacks the tool: least privilege, or a deployment mistake
        raise permanent(
            f"{who}: tool '{spec.name}': cannot load {spec.handler!r} on this worker: {type(err).__name__}: {err}",
            kind="ToolNotFound",
        ) from None
    try:
        kwargs = sig.call_args(arguments, ctx)
    except ValidationError as err:
        return Outcome(f"error: bad arguments for {spec.name}: {_brief(err)}", True)
    try:
        if inspect.iscoroutinefunction(sig.fn):
            value = await asyncio.wait_for(sig.fn(**kwargs), spec.timeout_s)
        else:
            value = await asyncio.wait_for(asyncio.to_thread(sig.fn, **kwargs), spec.timeout_s)
    except ToolError as err:
        return Outcome(f"error: {scrub(str(err))}", True)
    except asyncio.TimeoutError:
        raise transient(f"{who}: tool '{spec.name}' took longer than {spec.timeout_s:g}s", kind="ToolTimeout") from None
    except ApplicationError:
        raise
    except Exception as err:  # not meant for the model: the attempt fails and is retried
        message = scrub(f"{who}: tool '{spec.name}' raised {type(err).__name__}: {err}")
        raise ApplicationError(message, type=type(err).__name__) from None
    return Outcome(_text(value))


async def _run_mcp(spec: ToolSpec, arguments: dict[str, Any], ctx: ToolContext, who: str) -> Outcome:
    meta: dict[str, Any] = {"ensemble/run_id": ctx.run_id, "ensemble/step": ctx.step, "ensemble/call_id": ctx.call_id}
    if ctx.idempotency_key:
        meta[mcp.META_KEY] = ctx.idempotency_key
    text, is_error = await mcp.call(spec.server or "", spec.remote or spec.name, arguments, meta, spec.timeout_s, who)
    return Outcome(_text(text), is_error)


def _headers(spec: ToolSpec, ctx: ToolContext, who: str) -> dict[str, str]:
    headers = {k: resolve_env_refs(v, f"{who}: tool '{spec.name}'") for k, v in spec.headers.items()}
    headers.update({"X-Ensemble-Run-Id": ctx.run_id, "X-Ensemble-Step": ctx.step, "X-Ensemble-Tool": spec.name})
    if ctx.idempotency_key:
        headers["Idempotency-Key"] = ctx.idempotency_key
    return headers


async def _run_http(spec: ToolSpec, arguments: dict[str, Any], ctx: ToolContext, who: str) -> Outcome:
    headers = _headers(spec, ctx, who)
    label = f"{who}: tool '{spec.name}'"
    await check_url(spec.url or "", label)
    try:
        response = await pool("models").post(spec.url or "", json=arguments, headers=headers, timeout=spec.timeout_s)
    except httpx.TimeoutException:
        raise transient(f"{label} timed out", kind="ToolTimeout") from None
    except httpx.TransportError as err:
        raise transient(f"{label} is unreachable: {type(err).__name__}", kind="Unreachable") from None
    body = scrub(response.text)
    status = response.status_code
    if status == 429 or status >= 500 or status in (408, 425):
        raise transient(
            f"{label} failed with HTTP {status}: {body[:200].strip()}",
            kind="ToolUnavailable",
            retry_after_s=parse_retry_after(retry_after_of(response.headers)),
        )
    if status in (401, 403):
        raise permanent(
            f"{label} refused the credentials (HTTP {status}); check the worker's environment", kind="PermissionDenied"
        )
    if status >= 300:
        return Outcome(f"error: HTTP {status}: {body[:1000].strip()}", True)
    try:
        return Outcome(_text(response.json()) if response.content else "null")
    except ValueError:
        return Outcome(_text(body))
