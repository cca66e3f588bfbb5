"""`http` agents: POST the step input as JSON to an existing service; its JSON reply is the output.

Header values may reference the worker's environment as `${env:NAME}` (NAME on the worker's
allow-list, see activities/scrub.py), so credentials stay on the worker; the URL must pass the
worker's egress policy (activities/egress.py). Each request carries `X-Ensemble-Run-Id`, `X-Ensemble-Step` and `X-Ensemble-Attempt`, and
an agent declared `effect: irreversible` also sends `Idempotency-Key` (stable across retries).
"""

from __future__ import annotations

import httpx
import jsonschema

from ensemble.activities.egress import check_url
from ensemble.activities.errors import classify_status, permanent, transient
from ensemble.activities.executors import executor
from ensemble.activities.pool import pool
from ensemble.activities.scrub import clip, resolve_env_refs
from ensemble.spec import AgentCall, AgentResult


def _headers(call: AgentCall) -> dict[str, str]:
    headers = {k: resolve_env_refs(v, f"agent '{call.agent.name}'") for k, v in call.agent.headers.items()}
    headers.update(
        {
            "X-Ensemble-Run-Id": call.context.run_id,
            "X-Ensemble-Step": call.context.step,
            "X-Ensemble-Attempt": str(call.context.attempt),
        }
    )
    if call.context.idempotency_key:  # irreversible agents: the same key on every retry, redrive and fork
        headers["Idempotency-Key"] = call.context.idempotency_key
    return headers


def _check(schema: dict | None, data: object, who: str, what: str) -> None:
    if schema is None:
        return
    try:
        jsonschema.validate(data, schema)
    except jsonschema.ValidationError as err:
        where = ".".join(str(p) for p in err.absolute_path) or "(root)"
        raise permanent(
            f"{who}: {what} does not match its schema at {where}: {err.message}", kind="ContractViolation"
        ) from None


@executor("http")
async def run_http(call: AgentCall) -> AgentResult:
    agent = call.agent
    who = f"agent '{agent.name}' ({agent.url})"
    _check(agent.input_schema, call.input, who, "input")
    headers = _headers(call)
    await check_url(agent.url or "", who)
    try:
        response = await pool("agents").post(agent.url or "", json=call.input, headers=headers, timeout=agent.timeout_s)
    except httpx.TimeoutException:
        raise transient(f"{who} timed out", kind="Timeout") from None
    except httpx.TransportError as err:
        raise transient(f"{who} is unreachable: {type(err).__name__}", kind="Unreachable") from None
    if 300 <= response.status_code < 400:
        where = clip(response.headers.get("location", "?"), 200, headers.values())
        raise permanent(
            f"{who} redirected (HTTP {response.status_code}) to {where}: point the agent at the final URL",
            kind="BadRequest",
        )
    if response.status_code >= 400:
        raise classify_status(
            response.status_code,
            who=who,
            detail=clip(response.text, 200, headers.values()),
            retry_after=response.headers.get("retry-after"),
        )
    try:
        output = response.json() if response.content else None
    except ValueError:
        raise permanent(
            f"{who} replied with something that is not JSON (HTTP {response.status_code})", kind="ContractViolation"
        ) from None
    _check(agent.output_schema, output, who, "reply")
    return AgentResult(output=output)
