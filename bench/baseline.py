"""The same chain hand-written in plain Temporal: the baseline Ensemble's overhead is measured
against. One workflow, one activity per step, each step's output the next one's input."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from bench.agents import tick_activity

BASELINE_WORKFLOW = "BenchBaselineChain"


@workflow.defn(name=BASELINE_WORKFLOW)
class BaselineChain:
    @workflow.run
    async def run(self, steps: int, local: bool) -> list[dict[str, Any]]:
        data: dict[str, Any] = {"n": 0}
        out = []
        for _ in range(steps):
            if local:
                data = await workflow.execute_local_activity(
                    tick_activity, data, start_to_close_timeout=timedelta(seconds=30)
                )
            else:
                data = await workflow.execute_activity(
                    tick_activity, data, start_to_close_timeout=timedelta(seconds=30)
                )
            out.append(data)
        return out
