"""Tracing: one trace per run through real workers, one span per agent attempt, no duplicates
when every workflow task replays, child workflows in the same trace, OTLP export over HTTP."""

from __future__ import annotations

import http.server
import json
import threading
import uuid
from collections import Counter

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ensemble.runs import inbox
from ensemble.runtime import launch, telemetry
from ensemble.runtime.connection import connect
from tests.conftest import ROOT, run_cli, running_worker
from tests.flowkit import request, retried_flow, start

SPANS = InMemorySpanExporter()

FLOW = retried_flow("traced")


@pytest.fixture(scope="module")
async def traced_client(dev_server):
    """A client (and so its workers) with tracing on, spans kept in memory."""
    assert telemetry.setup_tracing("ensemble-test", SimpleSpanProcessor(SPANS))
    return await connect()


def spans_of(trace_id: int) -> list[ReadableSpan]:
    return [s for s in SPANS.get_finished_spans() if s.context.trace_id == trace_id]


def agent_spans(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith("agent ")]


async def run_traced(client, task_queue: str, flow, run_input, **worker) -> tuple[str, int]:
    """Start a run under a `run` root span, as the starter does; the run id and its trace id."""
    req = request(flow, run_input, task_queue)
    run_id = f"{req.flow.name}-{uuid.uuid4().hex[:8]}"
    async with running_worker(client, task_queue, **worker):
        with telemetry.run_span(req.flow.name, run_id) as root:
            handle = await start(client, req, run_id)
        await handle.result()
    return run_id, root.get_span_context().trace_id


@pytest.mark.parametrize("cache", [None, 0], ids=["cached", "max_cached_workflows=0"])
async def test_one_trace_per_run_and_one_span_per_agent_attempt(traced_client, task_queue, cache):
    options = {} if cache is None else {"max_cached_workflows": cache}
    run_id, trace_id = await run_traced(traced_client, task_queue, FLOW, {"text": "hi there"}, **options)
    spans = spans_of(trace_id)
    by_name = Counter(s.name for s in spans)
    # shout once, flaky twice (its first attempt fails), count once: one span per attempt, no duplicates
    assert {n: c for n, c in by_name.items() if n.startswith("agent ")} == {
        "agent shout": 1,
        "agent flaky": 2,
        "agent count": 1,
    }
    assert by_name["run traced"] == 1
    assert by_name["RunWorkflow:EnsembleFlow"] == 1
    assert by_name["StartActivity:flaky"] == 1  # one schedule, two attempts
    assert all(c == 1 for n, c in by_name.items() if not n.startswith(("agent flaky", "RunActivity:flaky")))
    ids = [s.context.span_id for s in spans]
    assert len(ids) == len(set(ids))

    workflow_span = next(s for s in spans if s.name == "RunWorkflow:EnsembleFlow")
    assert workflow_span.attributes["ensemble.flow"] == "traced"
    assert workflow_span.attributes["ensemble.run_id"] == run_id
    assert workflow_span.attributes["ensemble.outcome"] == "completed"

    flaky = sorted(
        (s for s in agent_spans(spans) if s.name == "agent flaky"), key=lambda s: s.attributes["ensemble.attempt"]
    )
    assert [(s.attributes["ensemble.attempt"], s.attributes["ensemble.outcome"]) for s in flaky] == [
        (1, "retrying"),
        (2, "completed"),
    ]
    assert flaky[0].status.status_code == trace.StatusCode.ERROR
    for s in agent_spans(spans):
        assert s.attributes["ensemble.run_id"] == run_id
        assert s.attributes["ensemble.flow"] == "traced"
        assert s.attributes["ensemble.step"] == s.name.split()[1]
        assert s.attributes["ensemble.agent"] == s.name.split()[1]
    # every span hangs off the run's root: parents are spans of the same trace
    known = set(ids)
    roots = [s for s in spans if s.parent is None or s.parent.span_id not in known]
    assert [s.name for s in roots] == ["run traced"]


async def test_child_workflows_stay_in_the_run_trace(traced_client, task_queue):
    """A supervisor's subtasks run as child workflows: their spans are in the run's trace."""
    plan = [
        {"id": "loud", "agent": "shout", "input": {"text": "$input.text"}},
        {"id": "size", "agent": "count", "input": {"text": "$results.loud.text"}, "depends_on": ["loud"]},
    ]
    flow = {
        "name": "sup",
        "imports": ["tests.agents"],
        "steps": [
            {
                "name": "lead",
                "supervisor": {
                    "planner": "boss",
                    "planner_input": {"plan": "$input.plan"},
                    "agents": ["shout", "count"],
                },
            }
        ],
    }
    run_id, trace_id = await run_traced(
        traced_client, task_queue, flow, {"text": "one two", "plan": plan}, max_cached_workflows=0
    )
    spans = spans_of(trace_id)
    assert Counter(s.name for s in spans)["RunWorkflow:EnsembleFlow"] == 3  # the run and its two subtasks
    assert Counter(s.name for s in agent_spans(spans)) == {"agent boss": 1, "agent shout": 1, "agent count": 1}
    children = {s.attributes["ensemble.run_id"] for s in spans if s.name == "RunWorkflow:EnsembleFlow"}
    assert children == {run_id, f"{run_id}/lead.loud", f"{run_id}/lead.size"}
    # every span of the run or of its child workflows is in this one trace
    mine = [s for s in SPANS.get_finished_spans() if str(s.attributes.get("ensemble.run_id", "")).startswith(run_id)]
    assert {s.context.trace_id for s in mine} == {trace_id}


async def test_model_and_tool_spans_nest_under_the_agent_span(traced_client, task_queue):
    """An executor's own spans (model and tool calls, made with get_tracer("ensemble")) are
    children of the agent span; the result's token usage is on it."""
    from ensemble.activities.executors import EXECUTORS
    from ensemble.spec import AgentResult, Usage

    plain = EXECUTORS["function"]

    async def modelled(call):
        tracer = trace.get_tracer("ensemble")
        with tracer.start_as_current_span("model call", attributes={"gen_ai.request.model": "tiny"}):
            with tracer.start_as_current_span("tool lookup"):
                result = await plain(call)
        return AgentResult(output=result.output, usage=Usage(prompt_tokens=7, completion_tokens=3, total_tokens=10))

    EXECUTORS["function"] = modelled
    try:
        flow = "name: modelled\nimports: [tests.agents]\nsteps: [{agent: shout, input: {text: $input.text}}]\n"
        _, trace_id = await run_traced(traced_client, task_queue, flow, {"text": "x"})
    finally:
        EXECUTORS["function"] = plain
    spans = {s.name: s for s in spans_of(trace_id)}
    agent_span = spans["agent shout"]
    assert spans["model call"].parent.span_id == agent_span.context.span_id
    assert spans["tool lookup"].parent.span_id == spans["model call"].context.span_id
    assert agent_span.parent.span_id == spans["RunActivity:shout"].context.span_id
    assert (agent_span.attributes["ensemble.tokens.prompt"], agent_span.attributes["ensemble.tokens.total"]) == (7, 10)


async def test_waiting_for_a_run_adds_nothing_to_its_trace(traced_client, task_queue):
    """`run --wait` polls the run for open gates while it waits; those polls are not the run's work
    and never start traces of their own (before, a run slower than the first poll had two)."""
    flow = {
        "name": "traced_wait",
        "imports": ["tests.agents"],
        "steps": [{"agent": "sleeper", "input": {"seconds": 1.5, "label": "slow"}}],
    }
    req = request(flow, {}, task_queue)
    run_id = f"traced_wait-{uuid.uuid4().hex[:8]}"
    before = len(SPANS.get_finished_spans())
    async with running_worker(traced_client, task_queue):
        await launch.start_request(traced_client, req, run_id, summary="traced wait")
        outcome = await inbox.settle(traced_client, traced_client.get_workflow_handle(run_id), poll_s=0.1)
    assert outcome["status"] == "completed"
    spans = SPANS.get_finished_spans()[before:]
    assert not [s.name for s in spans if "Query" in s.name]
    assert len({s.context.trace_id for s in spans}) == 1
    assert [s.name for s in agent_spans(spans)] == ["agent sleeper"]


class _Collector(http.server.BaseHTTPRequestHandler):
    bodies: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _Collector.bodies.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_cli_run_exports_the_trace_over_otlp(dev_server, task_queue):
    """`OTEL_TRACES_EXPORTER=otlp` on the starter (with its in-process worker): spans reach an
    OTLP/HTTP collector on loopback, all in one trace, under the service name asked for."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    try:
        env = dev_server.env(
            ENSEMBLE_TASK_QUEUE=task_queue,
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.server_address[1]}",
            OTEL_SERVICE_NAME="ensemble-ci",
        )
        result = run_cli(["run", "hello", "--input", "@examples/hello/input.json", "--wait", "--json"], env)
        assert result.returncode == 0, result.stderr
        run_id = json.loads(result.stdout)["run_id"]
    finally:
        collector.shutdown()
    spans, services = [], set()
    for path, body in _Collector.bodies:
        assert path == "/v1/traces"
        req = ExportTraceServiceRequest.FromString(body)
        for rs in req.resource_spans:
            services |= {a.value.string_value for a in rs.resource.attributes if a.key == "service.name"}
            spans += [s for ss in rs.scope_spans for s in ss.spans]
    assert services == {"ensemble-ci"}
    names = Counter(s.name for s in spans)
    assert names["run hello"] == 1 and names["RunWorkflow:EnsembleFlow"] == 1
    traces: dict[bytes, list[str]] = {}
    for s in spans:
        traces.setdefault(s.trace_id, []).append(s.name)
    assert len(traces) == 1, f"spans by trace: {list(traces.values())}"
    agent_attrs = [{a.key: a.value for a in s.attributes} for s in spans if s.name.startswith("agent ")]
    assert agent_attrs and all(a["ensemble.run_id"].string_value == run_id for a in agent_attrs)


def test_unknown_exporter_is_one_line(dev_server):
    result = run_cli(["flows"], dev_server.env(OTEL_TRACES_EXPORTER="zipkin"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "OTEL_TRACES_EXPORTER" in result.stderr


def test_tracing_is_off_without_the_environment(dev_server):
    env = dev_server.env()
    assert "OTEL_TRACES_EXPORTER" not in env
    code = "from ensemble.runtime import telemetry; print(telemetry.setup_tracing('x'), telemetry.plugins())"
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False []", out.stderr
