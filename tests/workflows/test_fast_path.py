"""Fast agents (`fast: true`) run as Temporal local activities: on the dev server, with retries,
with replay on every task, mixed with standard agents, and refused where they cannot work."""

from __future__ import annotations

import json

import pytest
from temporalio.api.enums.v1 import EventType

from ensemble.runs.view import describe_run
from ensemble.spec.errors import InputError
from tests.conftest import ROOT, run_cli
from tests.flowkit import request, run_to_end

FAST_CHAIN = """
name: fast_chain
agents:
  - {name: shout_fast, handler: "tests.agents:shout", fast: true}
  - {name: count_fast, handler: "tests.agents:count", fast: true}
steps:
  - agent: shout_fast
    input: {text: $input.text}
  - agent: count_fast
    input: {text: $shout_fast.text}
  - name: again
    agent: shout_fast
    input: {text: $input.text}
output: {loud: $shout_fast.text, counted: $count_fast, again: $again.text}
"""

RETRY = "{initial_interval_s: 0.1, backoff_coefficient: 1.0, max_attempts: 3}"


def _events(history, kind):
    return [e for e in history.events if e.event_type == kind]


def _markers(history) -> list[dict]:
    """The local-activity markers of a history: each one's recorded data (type, id, attempt)."""
    out = []
    for e in _events(history, EventType.EVENT_TYPE_MARKER_RECORDED):
        attrs = e.marker_recorded_event_attributes
        data = attrs.details["data"].payloads[0].data
        out.append({"marker": attrs.marker_name, **json.loads(data)})
    return out


@pytest.mark.parametrize("cache", [None, 0], ids=["cached", "replay-every-task"])
async def test_fast_agents_run_as_local_activities(dev_server, task_queue, cache):
    worker = {} if cache is None else {"max_cached_workflows": cache}
    handle, outcome = await run_to_end(dev_server.client, task_queue, FAST_CHAIN, {"text": "hello big world"}, **worker)
    assert outcome is not None
    assert outcome.output == {
        "loud": "HELLO BIG WORLD",
        "counted": {"chars": 15, "words": 3},
        "again": "HELLO BIG WORLD",
    }
    assert outcome.steps == ["shout_fast", "count_fast", "again"]

    history = await handle.fetch_history()
    assert _events(history, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) == []
    markers = _markers(history)
    assert [m["marker"] for m in markers] == ["core_local_activity"] * 3
    assert [(m["activity_type"], m["activity_id"]) for m in markers] == [
        ("shout_fast", "shout_fast"),
        ("count_fast", "count_fast"),
        ("shout_fast", "again"),
    ]
    steps = (await describe_run(dev_server.client, handle.id)).steps  # status reads the markers back
    assert [(s.name, s.agent, s.status, s.attempts) for s in steps] == [
        ("shout_fast", "shout_fast", "completed", 1),
        ("count_fast", "count_fast", "completed", 1),
        ("again", "shout_fast", "completed", 1),
    ]
    assert steps[1].output == {"chars": 15, "words": 3}


async def test_a_decorated_agent_declares_itself_fast(dev_server, task_queue):
    flow = """
name: decorated_fast
imports: [tests.agents]
steps:
  - agent: mirror
    input: {text: $input.text}
  - agent: shout
    input: {text: $mirror.text}
"""
    handle, outcome = await run_to_end(dev_server.client, task_queue, flow, {"text": "abc"})
    assert outcome is not None and outcome.output["shout"] == {"text": "CBA"}
    history = await handle.fetch_history()
    assert [m["activity_type"] for m in _markers(history)] == ["mirror"]
    scheduled = _events(history, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    assert [e.activity_task_scheduled_event_attributes.activity_type.name for e in scheduled] == ["shout"]


def test_a_decorated_fast_agent_that_cannot_be_local_is_refused():
    from pydantic import ValidationError

    from ensemble import agent

    with pytest.raises(ValidationError, match="a fast agent runs on the run's own worker"):
        agent(name="fast_elsewhere", fast=True, task_queue="gpu")(lambda data: data)


async def test_fast_agent_retries_under_its_policy(dev_server, task_queue):
    flow = f"""
name: fast_retry
agents:
  - {{name: flaky_fast, handler: "tests.agents:flaky", fast: true, retry: {RETRY}}}
steps:
  - agent: flaky_fast
"""
    handle, outcome = await run_to_end(dev_server.client, task_queue, flow, {}, max_cached_workflows=0)
    assert outcome is not None
    assert outcome.output["flaky_fast"]["attempt"] == 2
    assert outcome.output["flaky_fast"]["run_id"] == handle.id
    [marker] = _markers(await handle.fetch_history())
    assert (marker["activity_type"], marker["attempt"]) == ("flaky_fast", 2)


async def test_exhausted_fast_agent_fails_the_run_with_the_step_named(dev_server, task_queue):
    flow = f"""
name: fast_broken
agents:
  - {{name: broken_fast, handler: "tests.agents:broken", fast: true, retry: {RETRY}}}
steps:
  - agent: broken_fast
"""
    handle, outcome = await run_to_end(dev_server.client, task_queue, flow, {})
    assert outcome is None
    desc = await handle.describe()
    assert desc.status.name == "FAILED"
    history = await handle.fetch_history()
    [failed] = _events(history, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED)
    message = failed.workflow_execution_failed_event_attributes.failure.message
    assert "step 'broken_fast' (agent 'broken_fast') failed" in message
    assert "the ledger is unbalanced" in message
    [marker] = _markers(history)
    assert marker["attempt"] == 3


async def test_fast_agent_that_times_out_fails_the_run(dev_server, task_queue):
    flow = """
name: fast_timeout
agents:
  - {name: sleepy_fast, handler: "tests.agents:sleeper", fast: true, timeout_s: 0.3, retry: {max_attempts: 1}}
steps:
  - agent: sleepy_fast
    input: {seconds: 5}
"""
    handle, outcome = await run_to_end(dev_server.client, task_queue, flow, {})
    assert outcome is None
    [failed] = _events(await handle.fetch_history(), EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED)
    message = failed.workflow_execution_failed_event_attributes.failure.message
    assert "step 'sleepy_fast' (agent 'sleepy_fast') failed" in message and "timed out" in message.lower()


async def test_fast_and_standard_agents_mix_in_one_flow(dev_server, task_queue):
    flow = """
name: mixed
imports: [tests.agents]
agents:
  - {name: shout_fast, handler: "tests.agents:shout", fast: true}
steps:
  - agent: shout_fast
    input: {text: $input.text}
  - agent: count
    input: {text: $shout_fast.text}
"""
    handle, outcome = await run_to_end(dev_server.client, task_queue, flow, {"text": "a b"}, max_cached_workflows=0)
    assert outcome is not None and outcome.output["count"] == {"chars": 3, "words": 2}
    history = await handle.fetch_history()
    assert [m["activity_type"] for m in _markers(history)] == ["shout_fast"]
    scheduled = _events(history, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)
    assert [e.activity_task_scheduled_event_attributes.activity_type.name for e in scheduled] == ["count"]


@pytest.mark.parametrize(
    "extra, message",
    [
        ("task_queue: gpu", "a fast agent runs on the run's own worker: remove task_queue or fast"),
        ("heartbeat_s: 5", "a fast agent cannot heartbeat: remove heartbeat_s or fast"),
    ],
)
def test_fast_agent_that_cannot_be_local_is_refused(extra, message):
    flow = f"""
name: bad_fast
agents:
  - {{name: shout_fast, handler: "tests.agents:shout", fast: true, {extra}}}
steps:
  - agent: shout_fast
"""
    with pytest.raises(InputError) as err:
        request(flow, {}, "unused")
    assert "agents[0]" in str(err.value) and message in str(err.value)


def test_validate_refuses_a_fast_agent_with_its_own_queue(dev_server, tmp_path):
    path = tmp_path / "bad.flow.yaml"
    path.write_text(
        "name: bad_fast\nagents:\n  - name: remote\n    handler: tests.agents:shout\n    task_queue: gpu\n    fast: true\n"
        "steps:\n  - agent: remote\n"
    )
    result = run_cli(["validate", str(path)], dev_server.env())
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"{path}:3" in lines[0] and "remove task_queue or fast" in lines[0]


def test_the_documented_fast_flow_runs_through_the_cli(dev_server, tmp_path):
    """docs/performance.md's fast-path example, exactly as written there."""
    doc = (ROOT / "docs" / "performance.md").read_text()
    start = doc.index("# fast_hello.flow.yaml")
    flow_text = doc[start : doc.index("```", start)]
    path = tmp_path / "fast_hello.flow.yaml"
    path.write_text(flow_text)
    result = run_cli(["run", str(path), "--input", '{"name": "Ada"}', "--wait", "--json"], dev_server.env())
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["status"], out["result"]) == ("completed", {"greeting": "Hello, Ada!", "words": 2})


async def test_the_documented_decorated_fast_agent_runs_both_ways(dev_server, task_queue, tmp_path, monkeypatch):
    """docs/agents.md's `@agent(fast=True)` example and its flow-file twin, as written there."""
    doc = (ROOT / "docs" / "agents.md").read_text()
    start = doc.index('@agent(description="Normalises an address"')
    code = doc[start : doc.index("```", start)]
    start = doc.index("  - {name: normalise_local")
    twin = doc[start : doc.index("\n", start)]
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "agents.py").write_text("from ensemble import agent\n\n\n" + code)
    monkeypatch.syspath_prepend(str(tmp_path))
    flow = f"""
name: normalise_twice
imports: [mypkg.agents]
agents:
{twin}
steps:
  - agent: normalise
    input: $input
  - agent: normalise_local
    input: $input
"""
    handle, outcome = await run_to_end(dev_server.client, task_queue, flow, {"city": "  Paris ", "zip": 75001})
    assert outcome is not None
    assert outcome.output["normalise"] == outcome.output["normalise_local"] == {"city": "paris", "zip": 75001}
    history = await handle.fetch_history()
    assert [m["activity_type"] for m in _markers(history)] == ["normalise", "normalise_local"]
    assert _events(history, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) == []
