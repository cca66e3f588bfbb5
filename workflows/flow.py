"""The one workflow that interprets every flow."""

from __future__ import annotations

from typing import Any

from temporalio import workflow

from workflows import chat, hierarchical, parallel, sequential  # noqa: F401  (register the patterns)
from workflows.engine import FlowRun

with workflow.unsafe.imports_passed_through():
    from ensemble.spec import WORKFLOW_NAME, FlowOutcome, RunRequest


@workflow.defn(name=WORKFLOW_NAME)
class EnsembleFlow:
    def __init__(self) -> None:
        self._run: FlowRun | None = None

    @workflow.run
    async def run(self, request: RunRequest) -> FlowOutcome:
        self._run = run = FlowRun(request)
        await run.run_steps(request.flow.steps)
        output = run.read(request.flow.output, "output") if request.flow.output is not None else {
            k: v for k, v in run.state.values.items() if k != "input"
        }
        await workflow.wait_condition(workflow.all_handlers_finished)
        # The input is already in the run's first event: the outcome leaves it out to stay small.
        state = {k: v for k, v in run.state.snapshot().items() if k != "input"}
        return FlowOutcome(flow=request.flow.name, output=output, state=state, steps=list(run.completed))

    @workflow.query
    def state(self) -> dict[str, Any]:
        """The live run state (named keys, including `input`)."""
        return self._run.state.snapshot() if self._run else {}

    @workflow.query
    def progress(self) -> dict[str, list[str]]:
        """Steps completed and steps running right now."""
        if not self._run:
            return {"completed": [], "running": []}
        return {"completed": list(self._run.completed), "running": list(self._run.running)}
