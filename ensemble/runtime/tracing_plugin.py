"""The worker's side of tracing: the plugin that carries a run's trace through Temporal (the SDK's
OpenTelemetry interceptor) and tags each workflow's span with its flow, run id and outcome. Loaded
only where tracing is on (`telemetry.plugins`), so commands that trace nothing never import it."""

from __future__ import annotations

import dataclasses
from typing import Any

from opentelemetry import trace
from temporalio import worker as temporal_worker
from temporalio import workflow
from temporalio.contrib.opentelemetry import OpenTelemetryInterceptor
from temporalio.plugin import SimplePlugin
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner


def plugin() -> SimplePlugin:
    return SimplePlugin(
        "ensemble.tracing",
        interceptors=[OpenTelemetryInterceptor(add_temporal_spans=True), _FlowSpanInterceptor()],
        workflow_runner=_with_passthrough,
    )


class _FlowSpanInterceptor(temporal_worker.Interceptor):
    """Tags the workflow's span with the flow, run id and outcome (it runs inside that span)."""

    def workflow_interceptor_class(
        self, input: temporal_worker.WorkflowInterceptorClassInput
    ) -> type[temporal_worker.WorkflowInboundInterceptor]:
        return _FlowSpanInbound


class _FlowSpanInbound(temporal_worker.WorkflowInboundInterceptor):
    async def execute_workflow(self, input: temporal_worker.ExecuteWorkflowInput) -> Any:
        span = trace.get_current_span()
        request = input.args[0] if input.args else None
        flow = getattr(getattr(request, "flow", None), "name", None) or getattr(request, "flow_name", None)
        info = workflow.info()
        span.set_attributes({"ensemble.run_id": info.workflow_id, "ensemble.workflow": info.workflow_type})
        if isinstance(flow, str):
            span.set_attribute("ensemble.flow", flow)
        try:
            result = await super().execute_workflow(input)
        except BaseException as err:
            span.set_attribute(
                "ensemble.outcome", "continued_as_new" if type(err).__name__ == "ContinueAsNewError" else "failed"
            )
            raise
        span.set_attribute("ensemble.outcome", "completed")
        return result


def _with_passthrough(runner: Any) -> Any:
    if isinstance(runner, SandboxedWorkflowRunner):
        return dataclasses.replace(runner, restrictions=runner.restrictions.with_passthrough_modules("opentelemetry"))
    return runner
