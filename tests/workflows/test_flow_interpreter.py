"""The flow interpreter on real Temporal servers: sequencing, state, retries, failures, queries."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError

from ensemble.runs.view import describe_run
from ensemble.spec import RetrySpec
from tests import agents
from tests.conftest import running_worker
from tests.flowkit import request, start

PIPELINE = """
name: tiny
imports: [tests.agents]
state:
  log: {reducer: append}
  total: {reducer: add, default: 100}
steps:
  - agent: shout
    input: {text: $input.text}
  - name: tail
    sequence:
      - agent: count
        input: {text: $shout.text}
        output: {log: chars, total: words, counted: $}
      - name: again
        agent: count
        input: {text: $input.text}
        output: {log: chars, total: words}
output: {loud: $shout.text, log: $log, total: $total, counted: $counted}
"""


async def test_sequential_flow_writes_state_through_reducers(dev_server, task_queue):
    client = dev_server.client
    async with running_worker(client, task_queue, max_cached_workflows=0):  # every task replays
        handle = await start(client, request(PIPELINE, {"text": "hello big world"}, task_queue))
        outcome = await handle.result()
    assert outcome.output == {
        "loud": "HELLO BIG WORLD",
        "log": [15, 15],
        "total": 106,
        "counted": {"chars": 15, "words": 3},
    }
    assert outcome.steps == ["shout", "tail.count", "tail.again"]
    assert outcome.state == {
        "shout": {"text": "HELLO BIG WORLD"},
        "log": [15, 15],
        "total": 106,
        "counted": {"chars": 15, "words": 3},
    }

    view = await describe_run(client, handle.id)
    assert view.status == "completed"
    assert [(s.name, s.agent, s.status, s.attempts) for s in view.steps] == [
        ("shout", "shout", "completed", 1),
        ("tail.count", "count", "completed", 1),
        ("tail.again", "count", "completed", 1),
    ]
    assert view.steps[0].output == {"text": "HELLO BIG WORLD"}
    assert all(s.latency_ms is not None and s.latency_ms >= 0 for s in view.steps)

    # Each step is an activity named after its agent, with a summary for the Web UI.
    history = await handle.fetch_history()
    scheduled = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    assert [e.activity_task_scheduled_event_attributes.activity_type.name for e in scheduled] == [
        "shout",
        "count",
        "count",
    ]
    summaries = [
        await client.data_converter.decode([e.user_metadata.summary]) if e.user_metadata.HasField("summary") else None
        for e in scheduled
    ]
    assert summaries[1] == ["count · step tail.count"]
    assert summaries[0] is None  # a step named after its agent: its activity type says it all


async def test_retry_then_success_is_visible_in_status(dev_server, task_queue):
    flow = "name: f\nimports: [tests.agents]\nsteps:\n  - agent: flaky\n"
    async with running_worker(dev_server.client, task_queue):
        handle = await start(dev_server.client, request(flow, {}, task_queue))
        outcome = await handle.result()
    assert outcome.output["flaky"]["attempt"] == 2
    assert outcome.output["flaky"]["run_id"] == handle.id
    [step] = (await describe_run(dev_server.client, handle.id)).steps
    assert (step.status, step.attempts) == ("completed", 2)


async def test_exhausted_agent_fails_the_run_with_a_clear_message(dev_server, task_queue):
    flow = "name: f\nimports: [tests.agents]\nsteps:\n  - agent: shout\n    input: {text: $input.text}\n  - agent: broken\n"
    async with running_worker(dev_server.client, task_queue):
        handle = await start(dev_server.client, request(flow, {"text": "x"}, task_queue))
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    view = await describe_run(dev_server.client, handle.id)
    assert view.status == "failed"
    assert "step 'broken' (agent 'broken') failed" in view.error
    assert "ValueError: the ledger is unbalanced" in view.error
    assert [(s.name, s.status, s.attempts) for s in view.steps] == [("shout", "completed", 1), ("broken", "failed", 3)]


async def test_non_retryable_error_types_stop_retries(dev_server, task_queue):
    flow = "name: f\nimports: [tests.agents]\nsteps:\n  - agent: picky\n"
    async with running_worker(dev_server.client, task_queue):
        handle = await start(dev_server.client, request(flow, {}, task_queue))
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    [step] = (await describe_run(dev_server.client, handle.id)).steps
    assert (step.status, step.attempts) == ("failed", 1)
    assert "KeyError" in step.error


async def test_state_is_queryable_while_the_run_is_live(dev_server, task_queue):
    flow = (
        "name: f\nimports: [tests.agents]\nsteps:\n  - agent: shout\n    input: {text: $input.text}\n  - agent: held\n"
    )
    agents.RELEASE.clear()
    async with running_worker(dev_server.client, task_queue):
        handle = await start(dev_server.client, request(flow, {"text": "live"}, task_queue))
        for _ in range(100):
            progress = await handle.query("progress")
            if progress["running"] == ["held"]:
                break
            await asyncio.sleep(0.05)
        assert progress == {"completed": ["shout"], "running": ["held"]}
        state = await handle.query("state")
        assert state == {"input": {"text": "live"}, "shout": {"text": "LIVE"}}
        view = await describe_run(dev_server.client, handle.id)
        assert view.status == "running"
        assert [(s.name, s.status) for s in view.steps] == [("shout", "completed"), ("held", "running")]
        agents.RELEASE.set()
        outcome = await handle.result()
    assert outcome.output["held"] == {"released": True}


async def test_bad_run_fails_cleanly_and_the_worker_carries_on(dev_server, task_queue):
    bad = "name: f\nimports: [tests.agents]\nsteps:\n  - agent: shout\n    input: {text: $input.text}\n"
    ghost = {
        "name": "g",
        "agents": [{"name": "ghost", "handler": "tests.no_such_module:fn"}],
        "steps": [{"agent": "ghost"}],
    }
    async with running_worker(dev_server.client, task_queue):
        h1 = await start(dev_server.client, request(bad, {"txt": "typo"}, task_queue))
        h2 = await start(dev_server.client, request(ghost, {}, task_queue, trusted=False))
        h3 = await start(dev_server.client, request(bad, {"text": "fine"}, task_queue))
        for h in (h1, h2):
            with pytest.raises(WorkflowFailureError):
                await h.result()
        assert (await h3.result()).output == {"shout": {"text": "FINE"}}
    v1 = await describe_run(dev_server.client, h1.id)
    assert "step 'shout': '$input.text' is not in the run state" in v1.error
    v2 = await describe_run(dev_server.client, h2.id)
    assert "handler 'tests.no_such_module:fn' is not deployed to this worker" in v2.error
    assert v2.steps[0].attempts == 1  # a missing handler is not retried


async def test_agent_input_is_validated_against_its_model(dev_server, task_queue):
    flow = "name: f\nimports: [tests.agents]\nsteps:\n  - agent: shout\n    input: {words: $input}\n"
    async with running_worker(dev_server.client, task_queue):
        handle = await start(dev_server.client, request(flow, "x", task_queue))
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    view = await describe_run(dev_server.client, handle.id)
    assert "agent 'shout': input does not match Text: text: Field required" in view.error
    assert view.steps[0].attempts == 1


async def test_agent_on_its_own_task_queue_runs_only_on_workers_of_that_queue(dev_server, task_queue):
    req = request(
        "name: f\nimports: [tests.agents]\nsteps:\n  - agent: shout\n    input: {text: $input}\n", "q", task_queue
    )
    req.agents["shout"].task_queue = f"{task_queue}-secure"
    async with running_worker(dev_server.client, task_queue, activities=False):
        async with running_worker(dev_server.client, f"{task_queue}-secure", workflows=False):
            outcome = await (await start(dev_server.client, req)).result()
    assert outcome.output == {"shout": {"text": "Q"}}


async def test_long_retry_backoff_is_a_durable_timer(time_env, task_queue):
    """An hour of backoff between attempts passes instantly on the time-skipping server."""
    req = request("name: f\nimports: [tests.agents]\nsteps:\n  - agent: flaky\n", {}, task_queue)
    req.agents["flaky"].retry = RetrySpec(initial_interval_s=3600, max_interval_s=3600, max_attempts=2)
    async with running_worker(time_env.client, task_queue):
        handle = await start(time_env.client, req)
        outcome = await handle.result()
    assert outcome.output["flaky"]["attempt"] == 2
