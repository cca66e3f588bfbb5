"""The agent activity: one dynamic activity whose type is the agent's name, dispatching to the
executor of the agent's kind. A new kind registers an executor here with `executor("kind")`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Awaitable, Callable

from temporalio import activity
from temporalio.common import RawValue

from ensemble.activities.errors import permanent
from ensemble.activities.faults import inject as inject_faults
from ensemble.activities.scrub import scrubbed_error
from ensemble.spec import AgentCall, AgentResult
from ensemble.runtime.telemetry import observe_agent

Executor = Callable[[AgentCall], Awaitable[AgentResult]]
EXECUTORS: dict[str, Executor] = {}


def executor(kind: str) -> Callable[[Executor], Executor]:
    def register(fn: Executor) -> Executor:
        EXECUTORS[kind] = fn
        return fn

    return register


@activity.defn(dynamic=True)
async def run_agent(args: Sequence[RawValue]) -> AgentResult:
    """Run whichever agent this activity type names."""
    call = activity.payload_converter().from_payload(args[0].payload, AgentCall)
    call.context.attempt = activity.info().attempt
    kind = call.agent.kind
    if kind == "function" and call.agent.llm is not None and os.environ.get("ENSEMBLE_LLM", "").strip():
        kind = "llm"  # this worker runs the agent's model-backed version (docs/llm.md)
    run = EXECUTORS.get(kind)
    with observe_agent(call) as observed:  # span, start/end log lines, metrics
        if run is None:
            raise permanent(f"agent '{call.agent.name}': this worker has no executor for kind '{call.agent.kind}'")
        try:
            await inject_faults(call)  # ENSEMBLE_FAULTS: chaos tests and rehearsals only (activities/faults.py)
            result = await run(call)
        except Exception as err:  # every failure leaves scrubbed, without its cause chain
            raise scrubbed_error(err) from None
        return observed.done(result)

