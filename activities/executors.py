"""The agent activity: one dynamic activity whose type is the agent's name, dispatching to the
executor of the agent's kind. A new kind registers an executor here with `executor("kind")`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Awaitable, Callable

from temporalio import activity
from temporalio.common import RawValue

from activities.errors import permanent
from ensemble.spec import AgentCall, AgentResult

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
    run = EXECUTORS.get(call.agent.kind)
    if run is None:
        raise permanent(f"agent '{call.agent.name}': this worker has no executor for kind '{call.agent.kind}'")
    return await run(call)

