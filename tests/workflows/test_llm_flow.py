"""llm agents end to end through the flow workflow on the dev server, against the loopback model
server (a separate process speaking the OpenAI and Anthropic protocols): tool calls, permission
refusals, structured output and re-asks, budgets, and retries that do not re-pay finished calls."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys

import pytest
from temporalio.client import WorkflowFailureError

from ensemble.runs.view import describe_run
from tests.conftest import ROOT
from tests.flowkit import request, run_to_end, start
from tests.llm_agents import FLAKY_CALLS, REFUNDS, SENTINEL_KEY, answer, calls, llm_flow, llm_server, use_server  # noqa: F401

MODELS = ["openai:test-model", "anthropic:test-model"]


@pytest.mark.parametrize("model", MODELS)
async def test_tool_call_then_structured_answer(dev_server, task_queue, llm_server, monkeypatch, model):
    server = llm_server(
        [calls(("lookup_order", {"order_id": "A-7"}), usage=(30, 8)), answer("billing", 2, usage=(50, 12))]
    )
    use_server(monkeypatch, server)
    handle, outcome = await run_to_end(
        dev_server.client, task_queue, llm_flow(model, tools=["lookup_order"]), {"text": "Where is A-7?"}
    )
    assert outcome is not None and outcome.output == {"support": {"label": "billing", "priority": 2}}

    first, second = [r["body"] for r in server.requests()]
    assert first["model"] == "test-model"
    if model.startswith("openai"):
        assert [t["function"]["name"] for t in first["tools"]] == ["lookup_order"]
        assert first["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"] == [
            "billing",
            "outage",
            "other",
        ]
        assert first["messages"][0] == {"role": "system", "content": first["messages"][0]["content"]}
        assert first["messages"][1] == {"role": "user", "content": "Ticket: Where is A-7?"}
        tool_msg = second["messages"][-1]
        assert tool_msg["role"] == "tool" and json.loads(tool_msg["content"])["status"] == "shipped"
    else:
        assert [t["name"] for t in first["tools"]] == ["lookup_order", "final_answer"]
        assert first["tool_choice"] == {"type": "any"}
        assert first["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Ticket: Where is A-7?"}]}]
        [result] = second["messages"][-1]["content"]
        assert result["type"] == "tool_result" and json.loads(result["content"])["status"] == "shipped"
    assert "You triage support tickets." in (first.get("system") or first["messages"][0]["content"])

    view = await describe_run(dev_server.client, handle.id)
    [step] = view.steps
    assert step.usage.model_dump() == {"prompt_tokens": 80, "completion_tokens": 20, "total_tokens": 100}
    assert step.model == model and step.refusals == []
    assert view.usage.total_tokens == 100


@pytest.mark.parametrize("model", MODELS)
async def test_a_tool_the_agent_may_not_call_is_refused_and_recorded(
    dev_server, task_queue, llm_server, monkeypatch, model
):
    server = llm_server([calls(("delete_everything", {}), ("lookup_order", {"order_id": "A-1"})), answer("other", 1)])
    use_server(monkeypatch, server)
    flow = llm_flow(model, tools=["lookup_order"])
    flow["agents"].append(
        {"name": "cleaner", "kind": "llm", "model": model, "tools": ["delete_everything"]}
    )  # declared, not ours
    handle, outcome = await run_to_end(dev_server.client, task_queue, flow, {"text": "clean up"})
    assert outcome.output["support"] == {"label": "other", "priority": 1}

    second = server.requests()[1]["body"]
    if model.startswith("openai"):
        refused, allowed = [m for m in second["messages"] if m["role"] == "tool"]
        refused_text, allowed_text = refused["content"], allowed["content"]
    else:
        refused, allowed = second["messages"][-1]["content"]
        assert refused["is_error"] is True and allowed["is_error"] is False
        refused_text, allowed_text = refused["content"], allowed["content"]
    assert refused_text == "refused: agent 'support' may not call tool 'delete_everything' (its tools: lookup_order)"
    assert "shipped" in allowed_text

    [step] = (await describe_run(dev_server.client, handle.id)).steps
    assert [(r.tool, r.turn) for r in step.refusals] == [("delete_everything", 1)]
    assert "may not call tool 'delete_everything'" in step.refusals[0].reason


@pytest.mark.parametrize("model", MODELS)
async def test_a_retried_attempt_resumes_from_its_transcript_without_repaying(
    dev_server, task_queue, llm_server, monkeypatch, model
):
    # Model call 1 asks for a tool that fails once (a transient error): the attempt fails and
    # Temporal retries it. The retry resumes from the heartbeated transcript: it runs the tool
    # again, but never repeats model call 1.
    server = llm_server([calls(("flaky_lookup", {"order_id": "B-2"})), answer("outage", 3)])
    use_server(monkeypatch, server)
    handle, outcome = await run_to_end(
        dev_server.client, task_queue, llm_flow(model, tools=["flaky_lookup"]), {"text": "B-2 is late"}
    )
    assert outcome.output["support"] == {"label": "outage", "priority": 3}
    assert FLAKY_CALLS[handle.id] == 2
    assert [r["entry"] for r in server.requests()] == [0, 1]  # two model calls in all, none repeated
    [step] = (await describe_run(dev_server.client, handle.id)).steps
    assert step.attempts == 2
    assert step.usage.total_tokens == 30  # both calls counted once, the first from the transcript


async def test_an_answer_that_fails_the_schema_is_reasked_with_the_error(
    dev_server, task_queue, llm_server, monkeypatch
):
    server = llm_server([answer("urgent", 1), answer("outage", 3)])  # 'urgent' is not a label
    use_server(monkeypatch, server)
    _, outcome = await run_to_end(dev_server.client, task_queue, llm_flow("openai:test-model"), {"text": "site down"})
    assert outcome.output["support"] == {"label": "outage", "priority": 3}
    reask = server.requests()[1]["body"]["messages"][-1]
    assert reask["role"] == "user"
    assert reask["content"].startswith(
        "Your answer does not match the required schema: label: Input should be 'billing', 'outage' or 'other'"
    )


async def test_an_answer_that_keeps_failing_the_schema_fails_the_step_for_good(
    dev_server, task_queue, llm_server, monkeypatch
):
    server = llm_server([{"reply": {"text": "I think it is billing."}}, {"reply": {"json": {"label": "billing"}}}])
    use_server(monkeypatch, server)
    flow = llm_flow("anthropic:test-model", llm={"max_reasks": 1})
    handle, outcome = await run_to_end(dev_server.client, task_queue, flow, {"text": "invoice?"})
    assert outcome is None
    view = await describe_run(dev_server.client, handle.id)
    assert (
        "the model's answer does not match the output schema after 1 re-ask(s): priority: Field required" in view.error
    )
    assert view.steps[0].attempts == 1  # non-retryable
    assert len(server.requests()) == 2


async def test_tool_errors_meant_for_the_model_are_answered_and_the_loop_goes_on(
    dev_server, task_queue, llm_server, monkeypatch
):
    server = llm_server(
        [
            calls(
                ("lookup_order", {"order_id": "missing"}), ("lookup_order", {"id": 5}), ("lookup_order", "{not json")
            ),
            answer("other", 1),
        ]
    )
    use_server(monkeypatch, server)
    _, outcome = await run_to_end(
        dev_server.client, task_queue, llm_flow("openai:test-model", tools=["lookup_order"]), {"text": "?"}
    )
    assert outcome.output["support"]["label"] == "other"
    results = [m["content"] for m in server.requests()[1]["body"]["messages"] if m["role"] == "tool"]
    assert results[0] == "error: no order missing"
    assert results[1].startswith("error: the arguments do not match the schema of lookup_order")
    assert results[2].startswith("error: the arguments of lookup_order must be a JSON object")


async def test_after_max_tool_turns_the_model_must_answer(dev_server, task_queue, llm_server, monkeypatch):
    server = llm_server([calls(("lookup_order", {"order_id": "A-1"})), answer("billing", 1)])
    use_server(monkeypatch, server)
    flow = llm_flow("openai:test-model", tools=["lookup_order"], llm={"max_tool_turns": 1})
    _, outcome = await run_to_end(dev_server.client, task_queue, flow, {"text": "?"})
    assert outcome.output["support"]["label"] == "billing"
    second = server.requests()[1]["body"]
    assert second["tool_choice"] == "none"
    assert second["messages"][-1]["content"].startswith("You have used all 1 tool turns")


async def test_irreversible_tools_get_an_idempotency_key_stable_across_retries(
    dev_server, task_queue, llm_server, monkeypatch
):
    # An irreversible HTTP tool answers 503 the first time: the attempt fails and is retried, and
    # the tool is called again with the same Idempotency-Key (the model is not asked again).
    service = _Recorder([(503, {"error": "busy"}), (200, {"refunded": 12.5})])
    tool = {
        "name": "refund_http",
        "kind": "http",
        "url": service.url,
        "effect": "irreversible",
        "input_schema": {"type": "object", "properties": {"order_id": {"type": "string"}}},
    }
    server = llm_server(
        [calls(("refund_http", {"order_id": "C-3"}), ("refund", {"order_id": "C-3", "amount": 12.5})), answer()]
    )
    use_server(monkeypatch, server)
    flow = llm_flow("openai:test-model", tools=["refund_http", "refund"], extra_tools=[tool])
    try:
        handle, outcome = await run_to_end(dev_server.client, task_queue, flow, {"text": "refund C-3"})
    finally:
        service.stop()
    assert outcome is not None
    keys = [h["idempotency-key"] for h in service.headers]
    assert len(keys) == 2 and keys[0] == keys[1] == f"{handle.id}/support/tool1.0"
    assert [r["key"] for r in REFUNDS if r["run_id"] == handle.id] == [f"{handle.id}/support/tool1.1"]
    assert len(server.requests()) == 2


class _Recorder:
    """A tiny HTTP service in this process: scripted (status, body) replies, headers recorded."""

    def __init__(self, replies: list[tuple[int, object]]) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        recorder = self
        self.replies, self.headers = replies, []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                recorder.headers.append({k.lower(): v for k, v in self.headers.items()})
                status, body = recorder.replies.pop(0) if len(recorder.replies) > 1 else recorder.replies[0]
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/refund"

    def stop(self) -> None:
        self.httpd.shutdown()


def _two_agent_flow(budget: dict) -> dict:
    flow = llm_flow("openai:test-model", budget=budget)
    flow["agents"].append({**flow["agents"][0], "name": "second_opinion"})
    flow["steps"].append({"agent": "second_opinion", "input": {"text": "$input.text"}})
    return flow


@pytest.mark.parametrize(
    "budget, usage, expected",
    [
        ({"tokens": 50}, (40, 20), "the run has used 60 of its 50 tokens"),
        (
            {"usd": 0.5, "prices": {"openai:*": {"prompt": 10, "completion": 30}}},
            (40_000, 10_000),
            "the run has spent $0.7000 of its $0.5000",
        ),
    ],
    ids=["tokens", "usd"],
)
async def test_an_exhausted_budget_stops_further_model_calls(
    dev_server, task_queue, llm_server, monkeypatch, budget, usage, expected
):
    server = llm_server([answer(usage=usage), answer(usage=usage)])
    use_server(monkeypatch, server)
    handle, outcome = await run_to_end(dev_server.client, task_queue, _two_agent_flow(budget), {"text": "?"})
    assert outcome is None
    view = await describe_run(dev_server.client, handle.id)
    assert view.error == (
        f"step 'second_opinion' (agent 'second_opinion') not started: the run's budget is exhausted: {expected}"
    )
    assert [s.name for s in view.steps] == ["support"] and len(server.requests()) == 1
    assert view.usage.total_tokens == sum(usage)


@pytest.mark.parametrize("decision", ["approve", "reject"])
async def test_an_exhausted_budget_with_approvers_waits_at_the_budget_gate(
    dev_server, task_queue, llm_server, monkeypatch, decision
):
    """With approvers, running out parks the run at gate `budget`: an approval raises the limit and
    the next agent runs; a rejection fails the run."""
    from temporalio.client import WorkflowFailureError

    from ensemble.spec import GateDecision
    from tests.conftest import running_worker
    from tests.flowkit import request, start

    server = llm_server([answer(usage=(40, 20)), answer(usage=(40, 20))])
    use_server(monkeypatch, server)
    flow = _two_agent_flow({"tokens": 50, "approvers": ["finance"], "raise_tokens": 100})
    flow["identity"] = "asserted"  # decided by a plain name here; proofs are tested in tests/trust/
    async with running_worker(dev_server.client, task_queue):
        handle = await start(dev_server.client, request(flow, {"text": "?"}, task_queue))
        for _ in range(200):
            pending = await handle.query("pending")
            if pending:
                break
            await asyncio.sleep(0.05)
        assert [(g["gate"], g["approvers"]) for g in pending] == [("budget", ["finance"])]
        assert len(server.requests()) == 1  # the second agent has not called the model
        await handle.execute_update("decide", GateDecision(gate="budget", decision=decision, by="finance"))
        try:
            outcome = await handle.result()
        except WorkflowFailureError as err:
            outcome, error = None, str(err.cause)
    if decision == "approve":
        assert set(outcome.output) >= {"support", "second_opinion"} and len(server.requests()) == 2
        assert outcome.approvals[0]["gate"] == "budget" and outcome.approvals[0]["decided_by"] == "finance"
    else:
        assert outcome is None and "gate 'budget' rejected by finance" in error and len(server.requests()) == 1


async def test_a_budget_within_its_limit_lets_the_run_finish_and_replays(
    dev_server, task_queue, llm_server, monkeypatch
):
    from temporalio.worker import Replayer

    from ensemble.runtime.converter import data_converter
    from ensemble.workflows.flow import EnsembleFlow

    server = llm_server([answer(usage=(10, 5)), answer(usage=(10, 5))])
    use_server(monkeypatch, server)
    flow = _two_agent_flow({"tokens": 100})
    handle, outcome = await run_to_end(dev_server.client, task_queue, flow, {"text": "?"}, max_cached_workflows=0)
    assert outcome is not None and set(outcome.output) == {"support", "second_opinion"}
    # each result sends its token usage compact, and the run counts it in full
    history = await handle.fetch_history()
    sent = [
        json.loads(e.activity_task_completed_event_attributes.result.payloads[0].data)
        for e in history.events
        if e.HasField("activity_task_completed_event_attributes")
    ]
    assert [r["usage"] for r in sent] == [[10, 5], [10, 5]]
    assert outcome.spent is not None and outcome.spent.model_dump() == {
        "prompt_tokens": 20,
        "completion_tokens": 10,
        "total_tokens": 30,
    }
    replayer = Replayer(workflows=[EnsembleFlow], data_converter=data_converter())
    assert (await replayer.replay_workflow(history)).replay_failure is None


async def test_a_budget_in_money_needs_the_models_price(dev_server, task_queue, llm_server, monkeypatch):
    server = llm_server([answer()])
    use_server(monkeypatch, server)
    budget = {"usd": 1, "prices": {"anthropic:*": {"prompt": 3, "completion": 15}}}
    handle, outcome = await run_to_end(dev_server.client, task_queue, _two_agent_flow(budget), {"text": "?"})
    assert outcome is None
    error = (await describe_run(dev_server.client, handle.id)).error
    assert error.startswith(
        "the budget is in usd but budget.prices has no price for model 'openai:test-model' (listed: anthropic:*)"
    )


def _worker(dev_server, task_queue: str, server, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "worker.py"],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dev_server.env(
            ENSEMBLE_TASK_QUEUE=task_queue, OPENAI_BASE_URL=server.openai_base, OPENAI_API_KEY=SENTINEL_KEY, **env
        ),
    )


def _stop(worker: subprocess.Popen) -> str:
    worker.kill()
    _, err = worker.communicate(timeout=10)
    return err.decode()


@pytest.mark.chaos
async def test_a_worker_killed_mid_agent_loses_no_finished_model_call(dev_server, task_queue, llm_server, tmp_path):
    marker = tmp_path / "slow.started"
    server = llm_server([calls(("slow_tool", {"marker": str(marker)})), answer("outage", 2)])
    flow = llm_flow("openai:test-model", tools=["slow_tool"], heartbeat_s=2)
    worker = _worker(dev_server, task_queue, server)
    try:
        handle = await start(dev_server.client, request(flow, {"text": "slow"}, task_queue))
        for _ in range(600):
            if marker.exists():
                break
            await asyncio.sleep(0.05)
        assert marker.exists(), "the tool never started"
        _stop(worker)  # SIGKILL while the tool runs: model call 1 is finished and checkpointed
        worker = _worker(dev_server, task_queue, server)
        outcome = await asyncio.wait_for(handle.result(), timeout=60)
    finally:
        _stop(worker)
    assert outcome.output["support"] == {"label": "outage", "priority": 2}
    assert [r["entry"] for r in server.requests()] == [0, 1]  # the retry did not call the model for call 1 again
    [step] = (await describe_run(dev_server.client, handle.id)).steps
    assert step.attempts == 2 and step.usage.total_tokens == 30


async def test_the_api_key_never_reaches_history_errors_or_logs(dev_server, task_queue, llm_server):
    leak = f"Incorrect API key provided: {SENTINEL_KEY}"
    server = llm_server(
        [
            {"match": "FAIL-401", "status": 401, "error": {"message": leak, "code": "invalid_api_key"}},
            {"match": "FAIL-400", "status": 400, "error": {"message": f"bad request for key {SENTINEL_KEY}"}},
            {"match": "FAIL-500", "status": 500, "error": {"message": f"upstream saw {SENTINEL_KEY}"}, "repeat": True},
            answer(),
        ]
    )
    flow = llm_flow("openai:test-model", retry={"initial_interval_s": 0.1, "max_attempts": 2})
    worker = _worker(dev_server, task_queue, server)
    try:
        handles = [
            await start(dev_server.client, request(flow, {"text": text}, task_queue))
            for text in ("ok", "FAIL-401", "FAIL-400", "FAIL-500")
        ]
        for handle in handles:
            with contextlib.suppress(WorkflowFailureError):
                await asyncio.wait_for(handle.result(), timeout=60)
    finally:
        logs = _stop(worker)
    assert all(r["headers"]["authorization"] == f"Bearer {SENTINEL_KEY}" for r in server.requests())  # it was used
    errors = [(await describe_run(dev_server.client, h.id)).error for h in handles]
    assert errors[0] is None
    assert "refused the request (HTTP 401): check OPENAI_API_KEY in the worker's environment" in errors[1]
    assert "bad request for key [redacted]" in errors[2] and "upstream saw [redacted]" in errors[3]
    for handle in handles:
        shown = subprocess.run(
            [
                str(ROOT / ".venv/bin/temporal"),
                "workflow",
                "show",
                "-w",
                handle.id,
                "--address",
                dev_server.info.address,
                "-o",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0 and handle.id in shown.stdout, shown.stderr
        assert SENTINEL_KEY not in shown.stdout
        assert SENTINEL_KEY not in "\n".join(
            str(e) for e in (await handle.fetch_history()).events
        )  # payload bytes as written
    assert "agent finished" in logs or "agent failed" in logs or "support" in logs
    assert SENTINEL_KEY not in logs


async def test_model_and_tool_calls_are_traced_under_the_agent_span(dev_server, task_queue, llm_server, monkeypatch):
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from ensemble.runtime import telemetry
    from ensemble.runtime.connection import connect

    spans = InMemorySpanExporter()
    assert telemetry.setup_tracing("ensemble-test", SimpleSpanProcessor(spans))
    client = await connect()
    server = llm_server(
        [calls(("lookup_order", {"order_id": "A-1"}), ("delete_everything", {}), usage=(30, 8)), answer(usage=(50, 12))]
    )
    use_server(monkeypatch, server)
    handle, outcome = await run_to_end(
        client, task_queue, llm_flow("openai:test-model", tools=["lookup_order"]), {"text": "?"}
    )
    assert outcome is not None
    mine = [s for s in spans.get_finished_spans() if s.name.startswith(("llm ", "tool ", "agent support"))]
    [agent] = [s for s in mine if s.name == "agent support" and s.attributes["ensemble.run_id"] == handle.id]
    ours = [s for s in mine if s.parent is not None and s.parent.span_id == agent.context.span_id]
    assert [s.name for s in ours] == [
        "llm openai:test-model",
        "tool lookup_order",
        "tool delete_everything",
        "llm openai:test-model",
    ]
    first_call, lookup, refused, second_call = (dict(s.attributes) for s in ours)
    assert (first_call["ensemble.llm.provider"], first_call["ensemble.llm.model"]) == ("openai", "test-model")
    assert (
        first_call["ensemble.tokens.prompt"],
        first_call["ensemble.tokens.completion"],
        first_call["ensemble.outcome"],
    ) == (30, 8, "tool_calls")
    assert second_call["ensemble.outcome"] == "stop" and second_call["ensemble.tokens.prompt"] == 50
    assert (lookup["ensemble.tool"], lookup["ensemble.tool.effect"], lookup["ensemble.outcome"]) == (
        "lookup_order",
        "read",
        "ok",
    )
    assert refused["ensemble.outcome"] == "refused"


def _supervised_flow(budget: dict) -> dict:
    """A supervisor (the `boss` test planner) delegating two model calls, one after the other, to
    subtask runs (child workflows)."""
    flow = llm_flow("openai:test-model", budget=budget)
    plan = [
        {"id": "first", "agent": "support", "input": {"text": "$input.text"}},
        {"id": "second", "agent": "support", "input": {"text": "$input.text"}, "depends_on": ["first"]},
    ]
    flow["imports"].append("tests.agents")
    flow["steps"] = [
        {
            "name": "desk",
            "supervisor": {"planner": "boss", "planner_input": {"plan": plan}, "agents": ["support"], "max_replans": 0},
        }
    ]
    return flow


async def test_the_budget_covers_the_model_calls_of_subtask_runs(dev_server, task_queue, llm_server, monkeypatch):
    server = llm_server([answer(usage=(10, 5)), answer(usage=(10, 5))])
    use_server(monkeypatch, server)
    handle, outcome = await run_to_end(dev_server.client, task_queue, _supervised_flow({"tokens": 10}), {"text": "?"})
    assert outcome is None and len(server.requests()) == 1  # the second subtask's run had nothing left
    view = await describe_run(dev_server.client, handle.id)
    assert (
        "the run's budget is exhausted: nothing was left of the run's budget when this subtask or chat started"
        in view.error
    )

    server = llm_server([answer(usage=(10, 5)), answer(usage=(10, 5))])
    use_server(monkeypatch, server)
    handle, outcome = await run_to_end(dev_server.client, task_queue, _supervised_flow({"tokens": 100}), {"text": "?"})
    assert outcome is not None and len(server.requests()) == 2
    assert outcome.spent.total_tokens == 30  # both subtasks' use, reported back to the supervising run


async def test_the_budget_covers_group_chat_turns(dev_server, task_queue, llm_server, monkeypatch):
    said = {"reply": {"json": {"message": "my view"}, "usage": [10, 5]}}
    server = llm_server([said, said, said, said])
    use_server(monkeypatch, server)
    flow = llm_flow(
        "openai:test-model",
        budget={"tokens": 20},
        llm={"output_model": None, "prompt": "Turn {turn}: {topic}"},
        output_schema={"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]},
    )
    flow["agents"].append({**flow["agents"][0], "name": "critic"})
    flow["steps"] = [
        {"name": "talk", "chat": {"participants": ["support", "critic"], "max_turns": 4, "topic": "$input.text"}}
    ]
    handle, outcome = await run_to_end(dev_server.client, task_queue, flow, {"text": "?"})
    assert outcome is None and len(server.requests()) == 2  # the third turn found the budget spent
    view = await describe_run(dev_server.client, handle.id)
    assert "not started: the run's budget is exhausted: the run has used 30 of its 20 tokens" in view.error
