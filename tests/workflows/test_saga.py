"""Compensation (saga) on a real server: when a run fails for good or is cancelled, the
compensations of the steps that completed run in reverse order, as activities, on the record."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import CancelledError

from ensemble.runs.view import describe_run
from tests.conftest import running_worker
from tests.failure_agents import rows
from tests.flowkit import request, run_to_end, start

FAILING = """
name: saga
imports: [tests.failure_agents]
steps:
  - name: reserve
    agent: tally
    input: {ledger: $input.ledger, value: seat}
    compensate: undo
  - name: both
    parallel:
      branches:
        - {name: hotel, agent: tally, input: {ledger: $input.ledger, value: room}, compensate: undo}
        - {name: car, agent: tally, input: {ledger: $input.ledger, value: sedan}, compensate: undo}
  - name: note
    agent: tally
    input: {ledger: $input.ledger, value: no undo for this one}
  - name: pay
    agent: tally
    input: {ledger: $input.ledger, value: 42}
    compensate: undo
    compensate_input: {ledger: $input.ledger, refund: $step.output.value, of: $step.path, seat: $reserve.value}
  - name: ship
    agent: explode
    input: {ledger: $input.ledger, value: parcel}
"""


async def completion_order(handle) -> list[str]:
    """Activity ids in the order their completions are in the run's history."""
    scheduled, order = {}, []
    async for e in handle.fetch_history_events():
        if e.HasField("activity_task_scheduled_event_attributes"):
            scheduled[e.event_id] = e.activity_task_scheduled_event_attributes.activity_id
        elif e.HasField("activity_task_completed_event_attributes"):
            order.append(scheduled[e.activity_task_completed_event_attributes.scheduled_event_id])
    return order


def undone(ledger, run_id: str) -> list[str]:
    return [r[0] for r in rows(ledger, "select step from undo where run_id = ? order by id", run_id)]


async def test_compensations_run_in_reverse_order_when_the_run_fails(dev_server, task_queue, tmp_path):
    ledger = tmp_path / "ledger.db"
    handle, out = await run_to_end(
        dev_server.client, task_queue, FAILING, {"ledger": str(ledger)}, max_cached_workflows=0
    )
    assert out is None
    order = undone(ledger, handle.id)
    # Last completed first: pay, then the two branches (in the order they completed), then reserve.
    assert order[0] == "pay" and order[-1] == "reserve" and sorted(order[1:3]) == ["both.car", "both.hotel"]
    assert len(order) == 4  # `note` declares no compensation, `ship` never completed
    # The branches' order is the order the run learnt of their completion: the history's, not the
    # order the agents wrote to the ledger (a completion can overtake another on its way back).
    completed = await completion_order(handle)
    assert order[1:3] == [s for s in reversed(completed) if s in ("both.hotel", "both.car")]

    [[payload]] = rows(ledger, "select payload from undo where run_id = ? and step = 'pay'", handle.id)
    assert '"refund": 42' in payload and '"of": "pay"' in payload and '"seat": "seat"' in payload
    [[payload]] = rows(ledger, "select payload from undo where run_id = ? and step = 'reserve'", handle.id)
    assert '"input": {"ledger"' in payload and '"output": {"attempt": 1, "step": "reserve", "value": "seat"}' in payload

    view = await describe_run(dev_server.client, handle.id)
    assert view.status == "failed"
    assert view.error.startswith("step 'ship' (agent 'explode') failed")  # the run's own error, unchanged
    comps = [(s.name, s.agent, s.status) for s in view.steps if s.kind == "compensation"]
    assert comps == [(name, "undo", "completed") for name in order]
    assert all(s.kind == "agent" for s in view.steps if s.agent != "undo")

    # Irreversible compensations get keys of their own, stable for the step.
    keys = rows(ledger, "select key from undo where run_id = ? order by id", handle.id)
    assert [k for (k,) in keys] == [f"{handle.id}/{name}#compensate" for name in order]


CANCELLED = """
name: saga_cancel
imports: [tests.failure_agents]
steps:
  - name: first
    agent: tally
    input: {ledger: $input.ledger, value: 1}
    compensate: undo
  - name: second
    agent: tally
    input: {ledger: $input.ledger, value: 2}
    compensate: undo
  - name: slow
    agent: linger
    fallback: backup
    compensate: undo
    input: {ledger: $input.ledger, seconds: 30}
"""


async def wait_for(predicate, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_compensations_run_in_reverse_order_when_the_run_is_cancelled(dev_server, task_queue, tmp_path):
    ledger = tmp_path / "ledger.db"
    client = dev_server.client
    async with running_worker(client, task_queue, max_cached_workflows=0):
        handle = await start(client, request(CANCELLED, {"ledger": str(ledger)}, task_queue))
        await wait_for(lambda: rows(ledger, "select 1 from execs where run_id = ? and agent = 'linger'", handle.id))
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as err:
            await handle.result()
        assert isinstance(err.value.cause, CancelledError)
        recovery = await handle.query("recovery")
    assert undone(ledger, handle.id) == ["second", "first"]
    assert [(c["step"], c["status"]) for c in recovery["compensations"]] == [
        ("second", "completed"),
        ("first", "completed"),
    ]
    assert (recovery["reused"], recovery["origin"]) == ([], None)
    # A cancellation is not a failure: the fallback never ran, and the run ends cancelled.
    assert rows(ledger, "select count(*) from execs where run_id = ? and agent = 'backup'", handle.id) == [(0,)]
    view = await describe_run(client, handle.id)
    assert view.status == "canceled"
    assert [(s.name, s.status) for s in view.steps if s.kind == "compensation"] == [
        ("second", "completed"),
        ("first", "completed"),
    ]


async def test_a_failing_compensation_is_recorded_and_the_others_still_run(dev_server, task_queue, tmp_path):
    ledger = tmp_path / "ledger.db"
    flow = """
name: saga_partial
imports: [tests.failure_agents]
steps:
  - {name: a, agent: tally, input: {ledger: $input.ledger}, compensate: undo}
  - {name: b, agent: tally, input: {ledger: $input.ledger}, compensate: botched_undo}
  - {name: c, agent: explode, input: {ledger: $input.ledger}}
"""
    async with running_worker(dev_server.client, task_queue):
        handle = await start(dev_server.client, request(flow, {"ledger": str(ledger)}, task_queue))
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        recovery = await handle.query("recovery")
    assert [(c["step"], c["agent"], c["status"]) for c in recovery["compensations"]] == [
        ("b", "botched_undo", "failed"),
        ("a", "undo", "completed"),
    ]
    assert "the refund service is down" in recovery["compensations"][0]["error"]
    assert undone(ledger, handle.id) == ["a"]
    view = await describe_run(dev_server.client, handle.id)
    assert view.status == "failed" and view.error.startswith("step 'c' (agent 'explode') failed")
    comps = [(s.name, s.status, s.attempts) for s in view.steps if s.kind == "compensation"]
    assert comps == [("b", "failed", 2), ("a", "completed", 1)]


async def test_nothing_is_compensated_when_the_run_completes(dev_server, task_queue, tmp_path):
    ledger = tmp_path / "ledger.db"
    flow = CANCELLED.replace("seconds: 30", "seconds: 0")
    handle, out = await run_to_end(dev_server.client, task_queue, flow, {"ledger": str(ledger)})
    assert out is not None and out.steps == ["first", "second", "slow"]
    assert undone(ledger, handle.id) == []


def test_an_unknown_compensation_agent_is_a_validation_error():
    from ensemble.spec.errors import InputError

    with pytest.raises(InputError) as err:
        request("name: x\nimports: [tests.failure_agents]\nsteps:\n  - {agent: tally, compensate: nope}\n", {}, "q")
    assert "steps[0].compensate: unknown agent 'nope'" in str(err.value)
