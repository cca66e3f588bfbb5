"""What an agent step writes to a run's history: the activity input is compact (`AgentCall.to_wire`)
and reads back as the same call; inputs in the full shape of earlier releases (the golden
histories) still run; and a typical step's input stays small (a byte bound, read from a real
history on the dev server)."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

from ensemble.authoring.flows import LoadedFlow, all_flows, load_flow_file
from ensemble.spec import (
    WORKFLOW_NAME,
    AgentCall,
    AgentContext,
    AgentResult,
    AgentSpec,
    RunRequest,
    Usage,
    protocol,
)
from ensemble.spec.records import ToolVerdict
from ensemble.spec.run import agent_wire, spec_digest
from tests.conftest import running_worker

HISTORIES = Path(__file__).resolve().parents[1] / "histories"
# The largest activity input (bytes of JSON) a step of the bundled `hello` flow may send: in the
# full shape it was 962-1,060 bytes (tests/histories/hello.json), compact about 130, with its spec named by
# digest about 110.
# Growing back fails here.
MAX_HELLO_INPUT = 200


def _read_back(call: AgentCall, activity_id: str, workflow_id: str, wire: dict[str, Any]) -> AgentCall:
    """What the activity reads, with the info Temporal gives it for this agent's options."""
    agent = call.agent
    return AgentCall.from_wire(
        json.loads(json.dumps(wire)),
        workflow_id=workflow_id,
        activity_id=activity_id,
        activity_type=agent.name,
        attempt=call.context.attempt,
        timeout_s=agent.timeout_s,
        heartbeat_s=None if agent.fast else agent.heartbeat_s,
        is_local=agent.fast,
    )


# What the activity never reads, left out of its input (`AgentCall.to_wire`).
NEVER_READ = {"description": "", "role": "", "schedule_to_close_s": None, "task_queue": None}


def _as_read(call: AgentCall) -> AgentCall:
    """The call as the activity needs it: the fields it never reads at their defaults."""
    unread = dict(NEVER_READ)
    if call.agent.kind == "function":
        unread["input_schema"] = None
        if call.agent.llm is None:
            unread["output_schema"] = None
    return call.model_copy(update={"agent": call.agent.model_copy(update=unread)})


def _context(agent: AgentSpec, step: str, run_id: str, key: str | None = None) -> AgentContext:
    return AgentContext(run_id=run_id, flow="f", step=step, agent=agent.name, idempotency_key=key)


def test_every_bundled_agent_reads_back_the_same():
    agents = [a for flow in all_flows() for a in flow.agents.values()]
    assert len(agents) > 5
    for agent in agents:
        call = AgentCall(agent=agent, input={"text": "x"}, context=_context(agent, "a.b[2]", "run-1"))
        for activity_id in ("a.b[2]", "a.b[2]#2", "a.b[2]#fallback"):
            wire = call.to_wire(activity_id, "run-1")
            assert _read_back(call, activity_id, "run-1", wire) == _as_read(call), agent.name
            # the full shape (what earlier releases scheduled) reads the same
            assert _read_back(call, activity_id, "run-1", call.model_dump(mode="json")) == call


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "m", "kind": "llm", "timeout_s": 60.0},  # an llm agent's default would be 300
        {"name": "m", "kind": "llm", "fast": True},  # no heartbeat on a local activity
        {"name": "h", "kind": "http", "url": "http://127.0.0.1:1/x", "effect": "irreversible", "heartbeat_s": 5},
        {"name": "f", "handler": "tests.agents:shout", "retry": {"max_attempts": 1}, "description": "d"},
    ],
)
def test_specs_whose_defaults_matter_read_back_the_same(spec):
    agent = AgentSpec.model_validate(spec)
    for key in (None, protocol.idempotency_key("run-1", "s"), "redrive-of-run-0/s"):
        call = AgentCall(
            agent=agent,
            input=None,
            context=_context(agent, "s", "run-1", key),
            verdict=ToolVerdict(call_id="c", digest="d", outcome="approved") if key else None,
        )
        wire = call.to_wire("s", "run-1")
        assert _read_back(call, "s", "run-1", wire) == _as_read(call)
        assert ("idempotency_key" in wire["context"]) == (key == "redrive-of-run-0/s")  # only what differs
    # another run id, step or agent in the context (a chat turn, a tool gate's continuation) is sent
    call = AgentCall(agent=agent, input=1, context=AgentContext(run_id="parent", flow="f", step="t", agent="x"))
    wire = call.to_wire("s~1", "child")
    assert set(wire["context"]) == {"flow", "run_id", "step", "agent"}
    assert _read_back(call, "s~1", "child", wire) == _as_read(call)


def test_results_are_sent_without_their_defaults():
    assert AgentResult(output="hi").to_wire() == {"output": "hi"}
    result = AgentResult(output={"a": 1}, usage=Usage(prompt_tokens=3, total_tokens=3), model="openai:m")
    assert AgentResult.model_validate(json.loads(json.dumps(result.to_wire()))) == result


@pytest.mark.parametrize(
    "usage, sent",
    [
        (Usage(prompt_tokens=40, completion_tokens=8, total_tokens=48), [40, 8]),
        (Usage(prompt_tokens=3, total_tokens=3), [3, 0]),
        (Usage(prompt_tokens=40, completion_tokens=8, total_tokens=50), [40, 8, 50]),  # a provider's own total
        (Usage(), [0, 0]),
    ],
)
def test_token_usage_is_sent_as_a_list_to_workflows_that_read_it(usage, sent):
    result = AgentResult(output="x", usage=usage, model="openai:m")
    wire = result.to_wire(compact_usage=True)
    assert wire["usage"] == sent
    assert AgentResult.model_validate(json.loads(json.dumps(wire))) == result
    assert result.to_wire()["usage"] == usage.model_dump(exclude_defaults=True)  # an older workflow's shape


@pytest.mark.parametrize("bad", [[1], [1, 2, 3, 4], ["1", "2"], [1.5, 2]])
def test_a_malformed_usage_list_is_refused(bad):
    with pytest.raises(ValueError):
        Usage.model_validate(bad)


def _hello() -> LoadedFlow:
    """The bundled `hello` flow, its handlers deployed to this process."""
    source = next(f.source for f in all_flows() if f.spec.name == "hello")
    assert source is not None
    return load_flow_file(source)


@workflow.defn(name="WireOldShape", sandboxed=False)
class OldShape:
    """Schedules an agent activity with an input taken from a recorded history, as it was sent."""

    @workflow.run
    async def run(self, activity_type: str, activity_id: str, data: dict[str, Any], queue: str) -> dict[str, Any]:
        return await workflow.execute_activity(
            activity_type,
            data,
            activity_id=activity_id,
            task_queue=queue,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


async def test_inputs_scheduled_in_the_full_shape_still_run(dev_server, task_queue):
    """The activity inputs recorded in a golden history (the full shape) run on today's activity."""
    history = json.loads((HISTORIES / "hello.json").read_text())
    scheduled = [e for e in history["events"] if "activityTaskScheduledEventAttributes" in e]
    assert scheduled
    hello = _hello()  # its handlers deployed to this process
    client = dev_server.client
    async with running_worker(client, task_queue, workflows=False):
        async with Worker(client, task_queue=f"{task_queue}-wf", workflows=[OldShape]):
            for event in scheduled:
                attrs = event["activityTaskScheduledEventAttributes"]
                data = json.loads(base64.b64decode(attrs["input"]["payloads"][0]["data"]))
                assert "name" in data["agent"] and "timeout_s" in data["agent"]  # the full shape
                # the history was recorded when the package's examples had another module path
                data["agent"]["handler"] = hello.agents[data["agent"]["name"]].handler
                result = await _run_old(client, task_queue, attrs, data)
                assert "output" in result and result.get("refusals", []) == []


async def _run_old(client, task_queue: str, attrs: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    return await client.execute_workflow(
        OldShape.run,
        args=[attrs["activityType"]["name"], attrs["activityId"], data, task_queue],
        id=f"wire-{uuid.uuid4().hex[:8]}",
        task_queue=f"{task_queue}-wf",
    )


async def test_a_bundled_flow_step_input_stays_small(dev_server, task_queue):
    """Read from a real history: every step of `hello` sends a compact input."""
    flow = _hello()
    client = dev_server.client
    req = RunRequest(flow=flow.spec, agents=flow.agents, input={"name": "Ada"}, task_queue=task_queue)
    async with running_worker(client, task_queue):
        handle = await client.start_workflow(
            WORKFLOW_NAME, req, id=f"wire-{uuid.uuid4().hex[:8]}", task_queue=task_queue
        )
        await handle.result()
    history = await handle.fetch_history()
    scheduled = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    assert scheduled
    for e in scheduled:
        [payload] = e.activity_task_scheduled_event_attributes.input.payloads
        assert len(payload.data) <= MAX_HELLO_INPUT, payload.data.decode()
        sent = json.loads(payload.data)
        # the spec is named by its digest; the start event holds it
        agent = req.agents[e.activity_task_scheduled_event_attributes.activity_type.name]
        assert sent["agent"] == "#" + spec_digest(agent_wire(agent))
        assert set(sent["context"]) == {"flow"}  # the run id is the workflow's own


async def test_an_agent_the_flow_defines_is_recorded_once_in_the_run_request(dev_server, task_queue):
    """The start event holds each agent once (in `agents`), not again in the flow's own list;
    the recorded request reads back as a request, and a defined agent no step uses stays."""
    from ensemble.authoring.flows import parse_flow
    from ensemble.client import EnsembleClient

    writer = {"name": "writer", "kind": "llm", "model": "openai:m", "llm": {"instructions": "Write."}}
    spare = {"name": "spare", "kind": "llm", "model": "openai:m", "llm": {"instructions": "Unused."}}
    loaded = parse_flow(
        {"name": "wire_once", "agents": [writer, spare], "steps": [{"agent": "writer", "input": "$input"}]}, "test"
    )
    request = RunRequest(flow=loaded.spec, agents=loaded.agents, input={"text": "hi"}, task_queue=task_queue)
    assert {a.name for a in request.flow.agents} == {"writer", "spare"}
    started = await EnsembleClient(dev_server.client).launch(request, run_id=f"wire-once-{uuid.uuid4().hex[:8]}")
    handle = dev_server.client.get_workflow_handle(started.run_id)
    try:
        first = (await handle.fetch_history()).events[0]
        [payload] = first.workflow_execution_started_event_attributes.input.payloads
        recorded = RunRequest.model_validate_json(payload.data)
    finally:
        await handle.terminate("only its start event was needed")
    assert [a.name for a in recorded.flow.agents] == ["spare"]  # no step uses it: not in `agents`
    assert recorded.agents == request.agents  # every agent the run uses, resolved, exactly once
    assert payload.data.count(b'"instructions":"Write."') == 1
