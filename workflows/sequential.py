"""Sequential pattern: nested steps run in order, each reading what the previous ones wrote."""

from __future__ import annotations

from temporalio import workflow

from ensemble.workflows.engine import FlowRun, pattern

with workflow.unsafe.imports_passed_through():
    from ensemble.spec import SequenceStep


@pattern(SequenceStep)
async def run_sequence(run: FlowRun, step: SequenceStep, path: str) -> object:
    return await run.run_steps(step.sequence, prefix=f"{path}.")
