"""Compensation (saga): agent steps that declare `compensate: AGENT` push an undo entry when they
complete; when the run fails for good or is cancelled, the entries run in reverse order of
completion, one at a time, each as an activity of its own, and the run then ends failed (or
cancelled) as it would have. Deterministic: only `workflow.*` APIs, no I/O.

A compensation that fails (after its agent's own retries) is recorded and the others still run:
undoing as much as can be undone beats stopping at the first problem.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from ensemble.logic.state import StateError, resolve
    from ensemble.spec import AgentStep, protocol

COMPENSATE_SUFFIX = protocol.COMPENSATE_SUFFIX
DEFAULT_INPUT = {"input": "$step.input", "output": "$step.output"}


def compensation_id(activity_id: str) -> str:
    """The activity id of the compensation of the step that ran as `activity_id`."""
    return f"{activity_id}{COMPENSATE_SUFFIX}"


@dataclass
class Compensation:
    """One completed step's undo, and (once the saga ran) what became of it."""

    step: str  # the step's path
    activity_id: str  # the compensation's own activity id
    agent: str  # the compensating agent
    payload: Any = None
    status: str = "pending"  # pending, completed, failed
    output: Any = None
    error: str | None = None

    def record(self) -> dict[str, Any]:
        return asdict(self)


class Saga:
    """The undo stack of one run (shared by its parallel branches: completion order is the
    order entries are pushed, which is deterministic in the workflow)."""

    def __init__(self) -> None:
        self.entries: list[Compensation] = []
        self.started = False

    def register(
        self, step: AgentStep, path: str, activity_id: str, state: dict[str, Any], step_input: Any, output: Any
    ) -> None:
        """Push the undo of a completed step. The compensation's input is resolved now, over the
        state as the step left it plus `$step` ({path, input, output})."""
        if not step.compensate:
            return
        entry = Compensation(step=path, activity_id=compensation_id(activity_id), agent=step.compensate)
        template = step.compensate_input if step.compensate_input is not None else DEFAULT_INPUT
        scope = {**state, "step": {"path": path, "input": step_input, "output": output}}
        try:
            entry.payload = resolve(template, scope)
        except StateError as err:  # a flow mistake: shown on the record, and nothing is run for it
            entry.status, entry.error = "failed", f"compensate_input: {err}"
        self.entries.append(entry)

    def records(self) -> list[dict[str, Any]]:
        """Every registered compensation, in the order they run (last completed step first)."""
        return [e.record() for e in reversed(self.entries)]

    async def unwind(self, run_one: Callable[[Compensation], Awaitable[None]]) -> list[dict[str, Any]]:
        """Run the compensations in reverse order. Runs to the end even when the workflow is
        cancelled while it works: a cancellation only reaches the task that was running the
        steps, and this waits on its own task through any further cancellation."""
        if self.started:
            return self.records()
        self.started = True

        async def all_of_them() -> None:
            for entry in reversed(self.entries):
                if entry.status == "pending":
                    await run_one(entry)

        task = asyncio.ensure_future(all_of_them())
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                continue
        task.result()
        return self.records()
