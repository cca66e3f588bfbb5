"""Fallback agents on a real server: a step's fallback runs on the same input when its agent fails
for good, and only then."""

from __future__ import annotations

import pytest

from ensemble.runs.view import describe_run
from ensemble.spec.errors import InputError
from tests.failure_agents import rows
from tests.flowkit import request, run_to_end


def flow(primary: str, fallback: str | None = "backup") -> str:
    return f"""
name: fb
imports: [tests.failure_agents]
steps:
  - agent: tally
    input: {{ledger: $input.ledger, value: first}}
  - name: lookup
    agent: {primary}
    {f"fallback: {fallback}" if fallback else ""}
    input: {{ledger: $input.ledger, value: $input.value}}
  - name: after
    agent: tally
    input: {{ledger: $input.ledger, value: $lookup.value}}
output: {{lookup: $lookup, after: $after.value}}
"""


def execs(ledger, run_id: str) -> list[tuple[str, str, int]]:
    return rows(ledger, "select step, agent, attempt from execs where run_id = ? order by id", run_id)


async def test_fallback_runs_when_the_primary_is_exhausted(dev_server, task_queue, tmp_path):
    ledger = tmp_path / "ledger.db"
    handle, out = await run_to_end(
        dev_server.client, task_queue, flow("explode"), {"ledger": str(ledger), "value": 7}, max_cached_workflows=0
    )
    assert out is not None
    assert out.output == {"lookup": {"step": "lookup", "value": 7, "by": "backup"}, "after": 7}
    assert execs(ledger, handle.id) == [
        ("tally", "tally", 1),
        ("lookup", "explode", 1),
        ("lookup", "explode", 2),
        ("lookup", "explode", 3),  # its retry policy, used up
        ("lookup", "backup", 1),
        ("after", "tally", 1),
    ]
    steps = [(s.name, s.agent, s.status, s.attempts) for s in (await describe_run(dev_server.client, handle.id)).steps]
    assert steps == [
        ("tally", "tally", "completed", 1),
        ("lookup", "explode", "failed", 3),
        ("lookup", "backup", "completed", 1),
        ("after", "tally", "completed", 1),
    ]


async def test_fallback_does_not_run_when_the_primary_succeeds(dev_server, task_queue, tmp_path):
    ledger = tmp_path / "ledger.db"
    handle, out = await run_to_end(dev_server.client, task_queue, flow("tally"), {"ledger": str(ledger), "value": 1})
    assert out.output["lookup"]["value"] == 1 and "by" not in out.output["lookup"]
    assert [agent for _, agent, _ in execs(ledger, handle.id)] == ["tally", "tally", "tally"]


async def test_a_failing_fallback_fails_the_run_naming_both(dev_server, task_queue, tmp_path):
    ledger = tmp_path / "ledger.db"
    handle, out = await run_to_end(
        dev_server.client, task_queue, flow("explode", "explode"), {"ledger": str(ledger), "value": 2}
    )
    assert out is None
    view = await describe_run(dev_server.client, handle.id)
    assert view.status == "failed"
    assert "step 'lookup' (agent 'explode') failed: " in view.error
    assert "its fallback 'explode' failed too" in view.error
    assert [s for s in execs(ledger, handle.id) if s[0] == "after"] == []
    assert len([s for s in execs(ledger, handle.id) if s[0] == "lookup"]) == 6  # 3 attempts each


def test_an_unknown_fallback_agent_is_a_validation_error():
    with pytest.raises(InputError) as err:
        request(flow("tally", "no_such_agent"), {}, "q")
    assert "steps[1].fallback: unknown agent 'no_such_agent'" in str(err.value)


# ---------------------------------------------------------------- the policy a step exhausts

POLICY = """
name: policy
agents:
  - name: tuned
    handler: "tests.failure_agents:tally"
    timeout_s: 7
    schedule_to_close_s: 40
    heartbeat_s: 5
    retry: {initial_interval_s: 0.5, backoff_coefficient: 1.5, max_interval_s: 4, max_attempts: 4, non_retryable_errors: [KeyError]}
  - {name: plain, handler: "tests.failure_agents:tally"}   # every policy field left at its default
steps:
  - {agent: tuned, input: {ledger: $input.ledger}}
  - {agent: plain, input: {ledger: $input.ledger}}
"""


async def test_each_call_carries_its_agents_timeouts_and_bounded_retry_policy(dev_server, task_queue, tmp_path):
    from temporalio.api.enums.v1 import EventType

    handle, out = await run_to_end(dev_server.client, task_queue, POLICY, {"ledger": str(tmp_path / "l.db")})
    assert out is not None
    scheduled = [
        e.activity_task_scheduled_event_attributes
        async for e in handle.fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    tuned, default = scheduled
    assert (
        tuned.start_to_close_timeout.seconds,
        tuned.schedule_to_close_timeout.seconds,
        tuned.heartbeat_timeout.seconds,
    ) == (7, 40, 5)
    r = tuned.retry_policy
    assert (
        r.initial_interval.ToMilliseconds(),
        r.backoff_coefficient,
        r.maximum_interval.seconds,
        r.maximum_attempts,
    ) == (500, 1.5, 4, 4)
    assert list(r.non_retryable_error_types) == ["KeyError"]
    # The defaults are bounded: 3 attempts (0 would mean unlimited), 60 s per attempt, 30 s at most between.
    d = default.retry_policy
    assert (
        default.start_to_close_timeout.seconds,
        d.maximum_attempts,
        d.maximum_interval.seconds,
        d.backoff_coefficient,
    ) == (60, 3, 30, 2.0)


async def test_a_permission_error_is_not_retried_and_says_so(dev_server, task_queue, tmp_path):
    ledger = tmp_path / "ledger.db"
    handle, out = await run_to_end(
        dev_server.client, task_queue, flow("forbidden", None), {"ledger": str(ledger), "value": 1}
    )
    assert out is None
    view = await describe_run(dev_server.client, handle.id)
    [step] = [s for s in view.steps if s.name == "lookup"]
    assert (step.status, step.attempts) == ("failed", 1)  # its policy allows 3: a permission is not transient
    assert (
        "agent 'forbidden' was refused permission: the service account cannot write to the ledger bucket" in view.error
    )
    assert "check the worker's credentials" in view.error


async def test_a_missed_heartbeat_times_the_attempt_out_and_the_fallback_takes_over(dev_server, task_queue, tmp_path):
    ledger = tmp_path / "ledger.db"
    handle, out = await run_to_end(dev_server.client, task_queue, flow("silent"), {"ledger": str(ledger), "value": 3})
    assert out.output["lookup"] == {"step": "lookup", "value": 3, "by": "backup"}
    steps = [
        (s.name, s.agent, s.status, s.attempts)
        for s in (await describe_run(dev_server.client, handle.id)).steps
        if s.name == "lookup"
    ]
    assert steps == [("lookup", "silent", "timed_out", 2), ("lookup", "backup", "completed", 1)]
