"""The agent activity: one dynamic activity whose type is the agent's name, dispatching to the
executor of the agent's kind. A new kind registers an executor here with `executor("kind")`.

Whatever an agent returns or raises leaves this activity in a shape Temporal can carry: an output
that cannot be serialised, or is over what the payload store (or, without one, the 1 MiB payload
limit Ensemble sets on Temporal) accepts, fails the step at once and for good (retrying would return the same), and
an error message is cut to a size that fits, so a run ends with a reason instead of retrying a
workflow task forever."""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError

from ensemble.activities.errors import permanent
from ensemble.activities.faults import inject as inject_faults
from ensemble.activities.scrub import scrubbed_error
from ensemble.activities.specs import spec_by_digest
from ensemble.runtime.payloads import INLINE_LIMIT, STORED_INPUT_LIMIT, external_storage
from ensemble.runtime.telemetry import observe_agent
from ensemble.spec import AgentCall, AgentResult
from ensemble.spec.run import SPEC_REF

MAX_ERROR_CHARS = 8 * 1024  # an error message travels in the run's history: keep it readable and small

Executor = Callable[[AgentCall], Awaitable[AgentResult]]
EXECUTORS: dict[str, Executor] = {}


KINDS = ("function", "http", "llm")  # each a module of this package that registers its executor


def load() -> None:
    """Register the executors (a worker at its start). They load here, not with the package, so a
    process that only reads runs (a CLI command, the service) never imports httpx or model clients."""
    for kind in KINDS:
        importlib.import_module(f"ensemble.activities.{kind}")


def executor(kind: str) -> Callable[[Executor], Executor]:
    def register(fn: Executor) -> Executor:
        EXECUTORS[kind] = fn
        return fn

    return register


def _seconds(value: timedelta | None) -> float | None:
    return value.total_seconds() if value else None


async def read_call(payload: Any) -> tuple[AgentCall, bool]:
    """The activity's input, compact (`AgentCall.to_wire`) or in the full shape of earlier
    releases, completed from this activity's info; a spec named by digest is read from the run's
    start event (`activities/specs.py`). And whether it was named by digest: the workflow that
    scheduled it then reads a result with compact token usage."""
    info = activity.info()
    data = activity.payload_converter().from_payload(payload, dict)
    if not isinstance(data, dict):
        raise permanent(f"agent '{info.activity_type}': the activity input is not an agent call", kind="InvalidInput")
    ref = data.get("agent")
    by_digest = False
    if isinstance(ref, str) and ref.startswith(SPEC_REF):
        by_digest = True
        data = {**data, "agent": await spec_by_digest(ref)}
    try:
        call = AgentCall.from_wire(
            data,
            workflow_id=info.workflow_id or "",
            activity_id=info.activity_id,
            activity_type=info.activity_type,
            attempt=info.attempt,
            timeout_s=_seconds(info.start_to_close_timeout),
            heartbeat_s=_seconds(info.heartbeat_timeout),
            is_local=info.is_local,
        )
    except ValueError as err:  # a pydantic ValidationError too
        raise permanent(
            f"agent '{info.activity_type}': the activity input is not an agent call: {str(err)[:300]}",
            kind="InvalidInput",
        ) from None
    return call, by_digest


@activity.defn(dynamic=True)
async def run_agent(args: Sequence[RawValue]) -> dict[str, Any]:
    """Run whichever agent this activity type names. Its result is sent compact
    (`AgentResult.to_wire`)."""
    try:
        call, by_digest = await read_call(args[0].payload)
    except Exception as err:  # reading the spec fails as an agent does: bounded and scrubbed
        raise scrubbed_error(_bounded(err)) from None
    kind = call.agent.kind
    if kind == "function" and call.agent.llm is not None and os.environ.get("ENSEMBLE_LLM", "").strip():
        kind = "llm"  # this worker runs the agent's model-backed version (docs/llm.md)
    if kind not in EXECUTORS:
        load()
    run = EXECUTORS.get(kind)
    with observe_agent(call) as observed:  # span, start/end log lines, metrics
        if run is None:
            raise permanent(f"agent '{call.agent.name}': this worker has no executor for kind '{call.agent.kind}'")
        try:
            await inject_faults(call)  # ENSEMBLE_FAULTS: chaos tests and rehearsals only (activities/faults.py)
            result = await run(call)
        except Exception as err:  # every failure leaves bounded and scrubbed, without its cause chain
            raise scrubbed_error(_bounded(err)) from None
        wire = checked_output(call, result, compact_usage=by_digest)
        observed.done(result)
        return wire


def output_limit() -> int:
    """The largest output an agent may return: what the payload store takes, or what fits inline."""
    return STORED_INPUT_LIMIT if external_storage() is not None else INLINE_LIMIT - 64 * 1024


def checked_output(call: AgentCall, result: AgentResult, *, compact_usage: bool = False) -> dict[str, Any]:
    """The result as it is sent (`AgentResult.to_wire`), once it is known to fit."""
    who = f"agent '{call.agent.name}'"
    try:
        wire = result.to_wire(compact_usage=compact_usage)
        size = len(json.dumps(wire).encode())
    except (TypeError, ValueError, RecursionError) as err:  # the same output would fail the same way again
        raise permanent(
            f"{who} returned an output that cannot be sent as JSON: {str(err)[:300]}", kind="UnserializableOutput"
        ) from None
    limit = output_limit()
    if size > limit:
        hint = (
            "; return a reference (a path or URL) instead"
            if external_storage() is not None
            else ("; configure a payload store (ENSEMBLE_PAYLOAD_STORE, docs/operations.md) or return a reference")
        )
        raise permanent(
            f"{who} returned {size / 2**20:.1f} MiB, over the {limit / 2**20:.1f} MiB a step's output may be{hint}",
            kind="OutputTooLarge",
        )
    return wire


def _bounded(err: Exception) -> Exception:
    """The same failure with its message cut to MAX_ERROR_CHARS (a 5 MB message would not fit in
    the run's history, and the attempt would end as a timeout instead of with its reason)."""
    message = err.message if isinstance(err, ApplicationError) else str(err)
    cause = str(err.__cause__ or "")
    if (
        len(message) <= MAX_ERROR_CHARS
        and len(cause) <= MAX_ERROR_CHARS
        and len(repr(getattr(err, "details", ""))) <= MAX_ERROR_CHARS
    ):
        return err
    cut = (
        f"{message[:MAX_ERROR_CHARS]}… ({len(message)} characters, cut)" if len(message) > MAX_ERROR_CHARS else message
    )
    if isinstance(err, ApplicationError):
        return ApplicationError(
            cut, type=err.type, non_retryable=err.non_retryable, next_retry_delay=err.next_retry_delay
        )
    return ApplicationError(cut, type=type(err).__name__)
