"""One model call over plain httpx: the request in the provider's wire format (`wire.py`) to the
endpoint the worker's environment names (`endpoints.py`), the reply parsed, failures classified as
retryable or not, with every message scrubbed of keys.
"""

from __future__ import annotations

import json
import re

import httpx

from ensemble.activities.egress import check_url
from ensemble.activities.errors import classify_status, parse_retry_after, permanent, retry_after_of, transient
from ensemble.activities.llm.endpoints import Endpoint
from ensemble.activities.llm.wire import Reply, Request, anthropic_body, openai_body, parse_anthropic, parse_openai
from ensemble.activities.pool import pool
from ensemble.activities.scrub import clip

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
