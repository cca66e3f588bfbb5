"""Tracing and metrics: one OpenTelemetry trace per run, Prometheus metrics on the worker.

Tracing follows the standard environment variables: `OTEL_TRACES_EXPORTER` (`console`, `otlp`,
`none`; a comma-separated list is allowed; unset means `none`), `OTEL_EXPORTER_OTLP_ENDPOINT` /
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (OTLP over HTTP), `OTEL_SERVICE_NAME`, `OTEL_SDK_DISABLED`.

Spans come from Temporal's OpenTelemetry plugin, whose replay-safe tracer provider gives spans
made inside a workflow deterministic ids and never ends them while history is replaying, so a
worker that replays (a restart, an evicted cache, `max_cached_workflows=0`) emits no duplicates.
The trace starts at `run` in the starter, continues in the workflow (`RunWorkflow:EnsembleFlow`,
tagged with the flow), its child workflows and every activity, where `agent <name>` spans (see
`observe_agent`) parent the model and tool spans an executor makes with
`opentelemetry.trace.get_tracer("ensemble")`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypeGuard

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from temporalio import activity
from temporalio.exceptions import ApplicationError

from ensemble.spec import AgentCall, AgentResult, Usage
from ensemble.spec.errors import EnsembleError, InputError

if TYPE_CHECKING:  # the SDKs' tracing and worker modules load where they are used: a CLI command needs neither
    from opentelemetry.sdk.trace import SpanProcessor
    from temporalio.contrib.opentelemetry import ReplaySafeTracerProvider
    from temporalio.plugin import SimplePlugin
    from temporalio.runtime import Runtime

_REPLAY_SAFE = "temporalio.contrib.opentelemetry"


def _replay_safe(provider: object) -> TypeGuard[ReplaySafeTracerProvider]:
    """Whether `provider` is Temporal's replay-safe tracer provider (never, unless its module was
    loaded: `setup_tracing` loads it when it installs one)."""
    module = sys.modules.get(_REPLAY_SAFE)
    return module is not None and isinstance(provider, module.ReplaySafeTracerProvider)


TRACER = "ensemble"
EXPORTERS = ("console", "otlp", "none")

# ---------------------------------------------------------------- tracing


def exporter_names() -> list[str]:
    """The span exporters OTEL_TRACES_EXPORTER asks for (none when unset or OTEL_SDK_DISABLED)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    raw = os.environ.get("OTEL_TRACES_EXPORTER", "none")
    names = [n.strip().lower() for n in raw.split(",") if n.strip()]
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise InputError(f"OTEL_TRACES_EXPORTER={raw!r}: unknown exporter {unknown[0]!r}; use console, otlp or none")
    return [n for n in names if n != "none"]


def _processor(name: str) -> SpanProcessor:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    if name == "console":  # each span as it ends, on stderr (stdout stays the command's output)
        return SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return BatchSpanProcessor(OTLPSpanExporter())  # reads OTEL_EXPORTER_OTLP_* itself


def setup_tracing(service: str, *processors: SpanProcessor) -> bool:
    """Install the replay-safe tracer provider with the exporters the environment names, plus
    `processors` (tests pass an in-memory one). Idempotent: later calls add their processors.
    Whether tracing is on."""
    provider = trace.get_tracer_provider()
    if _replay_safe(provider):
        for p in processors:
            provider.add_span_processor(p)
        return True
    wanted = [_processor(n) for n in exporter_names()] + list(processors)
    if not wanted:
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from temporalio.contrib.opentelemetry import create_tracer_provider

    # OTEL_RESOURCE_ATTRIBUTES is read too; OTEL_SERVICE_NAME wins over the default name.
    provider = create_tracer_provider(
        resource=Resource.create({SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or service})
    )
    for p in wanted:
        provider.add_span_processor(p)
    trace.set_tracer_provider(provider)
    return tracing_enabled()


def tracing_enabled() -> bool:
    return _replay_safe(trace.get_tracer_provider())


def flush() -> None:
    """Export spans still buffered (a CLI process exits right after its command)."""
    provider = trace.get_tracer_provider()
    if _replay_safe(provider):
        provider.force_flush(5000)


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER)


@contextlib.contextmanager
def run_span(flow: str, run_id: str) -> Iterator[trace.Span]:
    """The root span of a run's trace, around starting it: the workflow and every agent of the
    run continue this trace (Temporal carries its context in the start request's headers)."""
    with tracer().start_as_current_span(
        f"run {flow}", kind=trace.SpanKind.CLIENT, attributes={"ensemble.flow": flow, "ensemble.run_id": run_id}
    ) as span:
        yield span


@contextlib.contextmanager
def unsampled() -> Iterator[None]:
    """Calls made inside record no spans, here or in the worker that answers them: they run under
    a parent that is not sampled, and Temporal carries that decision in its headers. For polls a
    caller makes while it waits on a run (not the run's work, and each would otherwise be a trace
    of its own)."""
    parent = trace.SpanContext(
        trace_id=secrets.randbits(128) or 1,
        span_id=secrets.randbits(64) or 1,
        is_remote=False,
        trace_flags=trace.TraceFlags(trace.TraceFlags.DEFAULT),
    )
    token = otel_context.attach(trace.set_span_in_context(trace.NonRecordingSpan(parent)))
    try:
        yield
    finally:
        otel_context.detach(token)


def plugins() -> list[SimplePlugin]:
    """Client plugins (workers built on the client inherit them) that carry the run's trace
    through Temporal; none when tracing is off."""
    if not tracing_enabled():
        return []
    from ensemble.runtime import tracing_plugin  # the worker's side: only where tracing is on

    return [tracing_plugin.plugin()]


# ---------------------------------------------------------------- metrics


def worker_runtime(metrics_port: int | None = None, host: str = "127.0.0.1") -> Runtime:
    """The Temporal runtime of a worker process: the SDK core's own log lines go through Python
    logging (so they are structured like every other line), and with `metrics_port` Prometheus
    metrics are served on http://HOST:PORT/metrics: the SDK's (`temporal_*`) and Ensemble's
    (`ensemble_agent_*`, see `observe_agent`)."""
    import logging

    from temporalio.runtime import (
        LogForwardingConfig,
        LoggingConfig,
        PrometheusConfig,
        Runtime,
        TelemetryConfig,
        TelemetryFilter,
    )

    logging_config = LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
    )
    if metrics_port is None:
        return Runtime(telemetry=TelemetryConfig(logging=logging_config))
    if not 0 < metrics_port < 65536:
        raise InputError(f"--metrics-port {metrics_port}: not a TCP port (1-65535)")
    prometheus = PrometheusConfig(
        bind_address=f"{host}:{metrics_port}", histogram_bucket_overrides={LATENCY: LATENCY_BUCKETS_MS}
    )
    try:
        return Runtime(telemetry=TelemetryConfig(logging=logging_config, metrics=prometheus))
    except Exception as err:  # the runtime reports a port in use as a bare RuntimeError
        raise EnsembleError(
            f"cannot serve metrics on {host}:{metrics_port} ({str(err).splitlines()[0][:120]}); choose another --metrics-port"
        ) from None


def quiet_runtime() -> Runtime:
    """A runtime that logs nothing of its own (replays report divergence themselves)."""
    from temporalio.runtime import Runtime, TelemetryConfig

    return Runtime(telemetry=TelemetryConfig(logging=None))


# ---------------------------------------------------------------- one agent attempt

LATENCY = "ensemble_agent_latency"
ATTEMPTS = "ensemble_agent_attempts"
FAILURES = "ensemble_agent_failures"
TOKENS = "ensemble_agent_tokens"
LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000, 300000)


class AgentAttempt:
    """What `observe_agent` yields: hand it the agent's result so its token usage is counted."""

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self.usage: Usage | None = None

    def done(self, result: AgentResult) -> AgentResult:
        self.usage = result.usage
        return result


def attempt_outcome(call: AgentCall, err: BaseException) -> str:
    """`retrying` when Temporal will try the agent again, else `failed` (or `canceled`)."""
    if isinstance(err, asyncio.CancelledError):
        return "canceled"
    kind = err.type if isinstance(err, ApplicationError) and err.type else type(err).__name__
    retry = call.agent.retry
    if (isinstance(err, ApplicationError) and err.non_retryable) or kind in retry.non_retryable_errors:
        return "failed"
    if retry.max_attempts and call.context.attempt >= retry.max_attempts:
        return "failed"
    return "retrying"


@contextlib.contextmanager
def observe_agent(call: AgentCall) -> Iterator[AgentAttempt]:
    """One agent attempt, observed: an `agent <name>` span (current while the executor runs, so
    model and tool spans nest under it), log lines `agent started` (debug) / `agent finished`
    (info, or warning/error for a failed attempt) bound with run_id, flow, step, agent and attempt,
    and the `ensemble_agent_*` metrics. Never records the agent's input or output."""
    ctx = call.context
    fields = {"run_id": ctx.run_id, "flow": ctx.flow, "step": ctx.step, "agent": ctx.agent, "attempt": ctx.attempt}
    attrs: dict[str, Any] = {f"ensemble.{k}": v for k, v in fields.items()}
    attrs["ensemble.kind"] = call.agent.kind
    model = getattr(call.agent, "model", None)
    if isinstance(model, str) and model:
        attrs["ensemble.model"] = model
    log = structlog.get_logger("ensemble.agent")
    started = time.monotonic()
    with tracer().start_as_current_span(f"agent {ctx.agent}", attributes=attrs) as span:
        sc = span.get_span_context()
        if sc.is_valid:
            fields["trace_id"] = format(sc.trace_id, "032x")
        with structlog.contextvars.bound_contextvars(**fields):
            log.debug("agent started", kind=call.agent.kind)  # one info line per attempt is enough
            attempt = AgentAttempt(span)
            try:
                yield attempt
            except BaseException as err:
                outcome = attempt_outcome(call, err)
                ms = round((time.monotonic() - started) * 1000, 1)
                span.set_attribute("ensemble.outcome", outcome)
                level = log.warning if outcome == "retrying" else log.error
                message = (getattr(err, "message", None) or str(err) or type(err).__name__).splitlines()[0][:300]
                level(
                    "agent finished",
                    kind=call.agent.kind,
                    outcome=outcome,
                    latency_ms=ms,
                    error_type=type(err).__name__,
                    error=message,
                )
                _record_metrics(ctx.agent, ms, outcome, None)
                raise
            ms = round((time.monotonic() - started) * 1000, 1)
            span.set_attribute("ensemble.outcome", "completed")
            extra: dict[str, Any] = {}
            if attempt.usage is not None:
                u = attempt.usage
                span.set_attributes(
                    {
                        "ensemble.tokens.prompt": u.prompt_tokens,
                        "ensemble.tokens.completion": u.completion_tokens,
                        "ensemble.tokens.total": u.total_tokens,
                    }
                )
                extra = {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens}
            log.info("agent finished", kind=call.agent.kind, outcome="completed", latency_ms=ms, **extra)
            _record_metrics(ctx.agent, ms, "completed", attempt.usage)


def _record_metrics(agent: str, ms: float, outcome: str, usage: Usage | None) -> None:
    """Through the Temporal runtime's meter, so they share the worker's Prometheus endpoint (a
    no-op when the worker serves no metrics). Temporal adds namespace, task_queue, activity_type."""
    meter = activity.metric_meter().with_additional_attributes({"agent": agent})
    meter.create_histogram_float(LATENCY, "latency of one agent attempt", "ms").record(ms, {"outcome": outcome})
    meter.create_counter(ATTEMPTS, "agent attempts").add(1, {"outcome": outcome})
    if outcome != "completed":
        meter.create_counter(FAILURES, "agent attempts that failed (outcome retrying or failed)").add(
            1, {"outcome": outcome}
        )
    if usage is not None:
        tokens = meter.create_counter(TOKENS, "model tokens used by agents")
        for kind, n in (("prompt", usage.prompt_tokens), ("completion", usage.completion_tokens)):
            if n > 0:
                tokens.add(n, {"kind": kind})
