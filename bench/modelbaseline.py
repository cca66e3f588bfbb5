"""The model-bound suite's baseline: one hand-written plain-Temporal workflow, one activity per
model call (bench/modelflows.py `model_step`, httpx to the same model server, the same request)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from bench.modelflows import BASELINE_HEARTBEAT_S, MODEL_BASELINE_WORKFLOW, model_step, step_names


@workflow.defn(name=MODEL_BASELINE_WORKFLOW)
class ModelBaseline:
    @workflow.run
    async def run(self, run: str, steps: int, text: str) -> str:
        for name in step_names(steps):
            text = await workflow.execute_activity(
                model_step,
                args=[run, name, text],
                start_to_close_timeout=timedelta(seconds=300),
                heartbeat_timeout=timedelta(seconds=BASELINE_HEARTBEAT_S) if BASELINE_HEARTBEAT_S else None,
            )
        return text
