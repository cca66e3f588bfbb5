"""Agent specs named by digest (activities/specs.py): a step's activity input names its agent's
spec by a digest of it, the worker reads the spec from the start event of the run that scheduled
the step (once per spec, however many steps start together), a chat's continued runs are read
the same way, and a digest nothing holds fails the step with the reason."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from ensemble.activities import specs
from ensemble.spec import AgentSpec, protocol
from ensemble.spec.run import agent_wire, spec_digest
from tests.conftest import running_worker
from tests.flowkit import request, start
from tests.workflows.test_chat import LAMP, chat_runs
from tests.workflows.test_chat import flow as chat_flow

TWO_AGENTS = {
    "name": "by_digest",
    "imports": ["tests.agents"],
    "steps": [
        {"agent": "shout", "input": {"text": "$input.text"}},
        {"agent": "count", "input": {"text": "$shout.text"}},
    ],
    "output": "$count",
}


def test_the_digest_is_of_what_the_activity_reads():
    a = AgentSpec(name="a", kind="llm", model="openai:m", llm={"instructions": "Summarise."})
    renamed = a.model_copy(update={"name": "b", "description": "read by the workflow only"})
    other = a.model_copy(update={"llm": a.llm.model_copy(update={"instructions": "Summarise!"})})
    # the name is the activity type and the description is never sent: the same spec on the wire
    assert spec_digest(agent_wire(a)) == spec_digest(agent_wire(renamed))
    assert spec_digest(agent_wire(a)) != spec_digest(agent_wire(other))
    assert len(spec_digest(agent_wire(a))) == 24  # 144 bits


@pytest.fixture
def reads(monkeypatch) -> list[tuple[str, str]]:
    """Start events the worker reads (workflow type, workflow id), with nothing kept before."""
    monkeypatch.setattr(specs, "_kept", type(specs._kept)())
    seen: list[tuple[str, str]] = []
    real = specs._start_agents

    async def counted(workflow_id: str, run_id: str, workflow_type: str):
        seen.append((workflow_type, workflow_id))
        await asyncio.sleep(0.3)  # a slow read: other steps start meanwhile
        return await real(workflow_id, run_id, workflow_type)

    monkeypatch.setattr(specs, "_start_agents", counted)
    return seen


async def test_runs_started_together_read_each_spec_once(dev_server, task_queue, reads):
    client = dev_server.client
    # started before any worker polls: their first steps start together
    handles = [await start(client, request(TWO_AGENTS, {"text": f"run {i}"}, task_queue)) for i in range(12)]
    async with running_worker(client, task_queue):
        outcomes = await asyncio.gather(*(h.result() for h in handles))
    assert [o.output for o in outcomes] == [{"chars": len(f"run {i}"), "words": 2} for i in range(12)]
    # the first run to name a spec is read (it holds both) while the others' steps wait for it
    assert len(reads) == 1, reads
    assert {t for t, _ in reads} == {protocol.FLOW_WORKFLOW}
    # every step named its spec by digest, and the history holds that spec in its start event
    events = [e async for e in handles[0].fetch_history_events()]
    started = json.loads(events[0].workflow_execution_started_event_attributes.input.payloads[0].data)
    scheduled = [e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    assert len(scheduled) == 2
    held = {spec_digest(agent_wire(a)) for a in specs.agents_of(protocol.FLOW_WORKFLOW, started).values()}
    for e in scheduled:
        sent = json.loads(e.activity_task_scheduled_event_attributes.input.payloads[0].data)
        assert sent["agent"].startswith("#") and sent["agent"][1:] in held


async def test_a_fast_agent_reads_its_spec_too(dev_server, task_queue, reads):
    """A `fast` agent runs as a local activity on the run's own worker, which reads the spec the
    same way."""
    flow = {"name": "fast_digest", "imports": ["tests.agents"], "steps": [{"agent": "mirror", "input": "$input"}]}
    async with running_worker(dev_server.client, task_queue):
        handle = await start(dev_server.client, request(flow, {"text": "abc"}, task_queue))
        out = await handle.result()
    assert out.output == {"mirror": {"text": "cba"}}
    assert reads == [(protocol.FLOW_WORKFLOW, handle.id)]
    markers = [e async for e in handle.fetch_history_events() if e.HasField("marker_recorded_event_attributes")]
    assert len(markers) == 1  # it ran as a local activity


async def test_a_continued_chat_run_holds_its_participants(dev_server, task_queue, reads):
    """A chat continues as new with its participants' specs; a step of a continued run reads them
    from that run's own start event."""
    client = dev_server.client
    async with running_worker(client, task_queue):
        handle = await start(
            client,
            request(
                chat_flow(participants=["seller", "buyer"], until={"keyword": "APPROVED"}, turns_per_run=3),
                LAMP,
                task_queue,
            ),
        )
        out = await handle.result()
    assert len(out.output["talk"]["transcript"]) == 8
    assert protocol.CHAT_WORKFLOW in {t for t, _ in reads}
    runs = await chat_runs(client, handle)
    assert len(runs) == 3
    last = runs[-1]
    started = last[0].workflow_execution_started_event_attributes
    scheduled = next(e for e in last if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    ref = json.loads(scheduled.activity_task_scheduled_event_attributes.input.payloads[0].data)["agent"]
    [chat_id] = [
        e.child_workflow_execution_started_event_attributes.workflow_execution.workflow_id
        async for e in handle.fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED
    ]
    third_run = runs[-2][-1].workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    assert started.continued_execution_run_id  # a continue-as-new's start event
    specs._kept.clear()  # nothing kept: read from the third run's start event
    env = ActivityEnvironment(client)
    env.info = dataclasses.replace(
        env.info,
        workflow_id=chat_id,
        workflow_run_id=third_run,
        workflow_type=protocol.CHAT_WORKFLOW,
        activity_type=scheduled.activity_task_scheduled_event_attributes.activity_type.name,
    )
    wire = await env.run(specs.spec_by_digest, ref)
    assert "#" + spec_digest(wire) == ref
    assert reads[-1] == (protocol.CHAT_WORKFLOW, chat_id)


@workflow.defn(name=protocol.FLOW_WORKFLOW, sandboxed=False)
class NamesAnUnknownSpec:
    """Started with a flow run's request, as a flow run is, but schedules a step naming a spec
    that request does not hold (a worker of another version would)."""

    @workflow.run
    async def run(self, req: dict[str, Any], ref: str, queue: str) -> Any:
        return await workflow.execute_activity(
            "shout",
            {"agent": ref, "context": {"flow": "f", "run_id": workflow.info().workflow_id}, "input": {"text": "x"}},
            task_queue=queue,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=1),
        )


@workflow.defn(name="NotAFlowRun", sandboxed=False)
class NotAFlowRun:
    @workflow.run
    async def run(self, ref: str, queue: str) -> Any:
        return await workflow.execute_activity(
            "shout",
            {"agent": ref, "context": {"flow": "f", "run_id": "r"}, "input": {"text": "x"}},
            task_queue=queue,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=3, initial_interval=timedelta(milliseconds=100)),
        )


@pytest.mark.parametrize("kind", ["unknown digest", "not a flow run"])
async def test_a_spec_nothing_holds_fails_the_step_with_the_reason(dev_server, task_queue, reads, kind):
    client = dev_server.client
    req = request(TWO_AGENTS, {"text": "x"}, task_queue)
    ref = "#" + spec_digest({"handler": "tests.agents:nothing"})
    async with running_worker(client, task_queue, workflows=False):
        async with Worker(client, task_queue=f"{task_queue}-wf", workflows=[NamesAnUnknownSpec, NotAFlowRun]):
            args = (
                [json.loads(req.model_dump_json()), ref, task_queue] if kind == "unknown digest" else [ref, task_queue]
            )
            with pytest.raises(WorkflowFailureError) as failed:
                await client.execute_workflow(
                    protocol.FLOW_WORKFLOW if kind == "unknown digest" else "NotAFlowRun",
                    args=args,
                    id=f"spec-{uuid.uuid4().hex[:8]}",
                    task_queue=f"{task_queue}-wf",
                )
    cause = failed.value.cause.cause
    if kind == "unknown digest":
        assert cause.type == "AgentSpecUnknown" and "is not in the start event" in cause.message, cause.message
    else:  # no retry: nothing will ever hold it
        assert cause.type == "AgentSpecUnknown" and "holds no agent specs" in cause.message and cause.non_retryable
        assert len(reads) == 1


async def test_a_failed_spec_read_is_scrubbed_like_an_agents_failure(dev_server, task_queue, reads):
    """The reason a spec could not be read names the run; a credential-shaped run id does not leave
    the worker in the clear."""
    client = dev_server.client
    token = "sk-" + uuid.uuid4().hex
    ref = "#" + spec_digest({"handler": "tests.agents:nothing"})
    async with running_worker(client, task_queue, workflows=False):
        async with Worker(client, task_queue=f"{task_queue}-wf", workflows=[NotAFlowRun]):
            with pytest.raises(WorkflowFailureError) as failed:
                await client.execute_workflow(
                    "NotAFlowRun", args=[ref, task_queue], id=f"spec-{token}", task_queue=f"{task_queue}-wf"
                )
    cause = failed.value.cause.cause
    assert cause.type == "AgentSpecUnknown" and "holds no agent specs" in cause.message, cause.message
    assert token not in cause.message and "[redacted]" in cause.message
