"""Approval gates on the time-skipping server: escalation after days, quorum, request-changes loops,
every refusal reason, racing decisions; and on the dev server, a parked run replayed on decision."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError

from ensemble.spec import GateDecision
from tests.conftest import running_worker
from tests.flowkit import request as flow_request
from tests.flowkit import start


def request(flow: dict, run_input: dict, task_queue: str):
    return flow_request(
        flow, run_input, task_queue, inbox=False
    )  # the time-skipping server has no custom search attributes


def gate_flow(gate: dict, *, before: list | None = None, after: list | None = None, name: str = "legal") -> dict:
    steps = before or [{"name": "draft", "agent": "echo", "input": {"text": "$input.text", "notes": "$legal.comment?"}}]
    steps = [*steps, {"name": name, "gate": gate}, *(after or [{"name": "send", "agent": "echo", "input": "$draft"}])]
    # These tests drive the gate machinery with plain names; proofs are tested in tests/trust/.
    return {"name": "gated", "imports": ["tests.agents"], "identity": "asserted", "steps": steps}


async def open_gates(handle: WorkflowHandle, count: int = 1) -> list[dict]:
    """The run's open gates once `count` are open (the query is answered by the worker)."""
    for _ in range(200):
        pending = await handle.query("pending")
        if len(pending) >= count:
            return pending
        await asyncio.sleep(0.05)
    raise AssertionError(f"gate did not open: {pending}")


async def quiet_history(handle: WorkflowHandle) -> int:
    """The run's event count once nothing is in flight: no workflow task and no activity pending
    (a gate's notification may still be completing when its query already shows it open)."""
    for _ in range(400):
        raw = (await handle.describe()).raw_description
        if not raw.HasField("pending_workflow_task") and not raw.pending_activities:
            count = len([e async for e in handle.fetch_history_events()])
            raw = (await handle.describe()).raw_description
            if not raw.HasField("pending_workflow_task") and not raw.pending_activities:
                return count
        await asyncio.sleep(0.05)
    raise AssertionError("the run never went quiet")


async def decide(handle: WorkflowHandle, decision: str, by: str, gate: str = "legal", comment: str = "") -> dict:
    result = await handle.execute_update("decide", GateDecision(gate=gate, decision=decision, by=by, comment=comment))
    return result if isinstance(result, dict) else result.model_dump()


async def refusal(handle: WorkflowHandle, decision: str, by: str, gate: str = "legal", comment: str = "") -> str:
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await decide(handle, decision, by, gate, comment)
    return str(info.value.cause)


async def test_gate_escalates_after_three_days_then_applies_its_default(time_env, task_queue):
    gate = {
        "approvers": ["alice", "bob"],
        "timeout": "3d",
        "escalate": [{"approvers": ["carol"], "timeout": "1d"}],
        "on_timeout": "reject",
        "on_reject": "continue",
    }
    async with running_worker(time_env.client, task_queue):
        handle = await start(time_env.client, request(gate_flow(gate), {"text": "contract"}, task_queue))
        [first] = await open_gates(handle)
        assert (first["tier"], first["approvers"]) == (1, ["alice", "bob"])
        await time_env.sleep(timedelta(days=2, hours=23))
        assert (await handle.query("pending"))[0]["tier"] == 1  # not before its deadline
        await time_env.sleep(timedelta(hours=2))
        [second] = await handle.query("pending")
        assert (second["tier"], second["approvers"]) == (2, ["carol"])
        assert "not an approver of gate 'legal' at tier 2" in await refusal(handle, "approve", "alice")
        out = await handle.result()
    [record] = out.approvals
    assert record["status"] == "rejected" and record["decided_by"] == "timeout"
    assert [(e["from_tier"], e["to_tier"]) for e in record["escalations"]] == [(1, 2)]
    assert out.state["legal"]["status"] == "rejected"
    assert "send" in out.steps  # on_reject: continue


async def test_quorum_needs_distinct_approvers_of_the_current_tier(time_env, task_queue):
    gate = {"approvers": ["alice", "bob", "carol"], "quorum": 2}
    async with running_worker(time_env.client, task_queue):
        handle = await start(time_env.client, request(gate_flow(gate), {"text": "c"}, task_queue))
        await open_gates(handle)
        assert (await decide(handle, "approve", "alice"))["status"] == "open"
        assert "already decided" in await refusal(handle, "approve", "alice")
        assert (await handle.query("pending"))[0]["approvals"] == 1
        result = await decide(handle, "approve", "carol", comment="fine by me")
        assert (result["status"], result["approvals"], result["quorum"]) == ("approved", 2, 2)
        out = await handle.result()
    assert out.steps == ["draft", "legal", "send"]
    [record] = out.approvals
    assert [d["by"] for d in record["decisions"]] == ["alice", "carol"]
    assert record["decided_by"] == "alice, carol"


async def test_request_changes_loops_back_with_the_comment_then_returns_to_the_gate(time_env, task_queue):
    gate = {"approvers": ["alice"], "changes_to": "draft", "max_rounds": 1}
    async with running_worker(time_env.client, task_queue):
        handle = await start(time_env.client, request(gate_flow(gate), {"text": "c"}, task_queue))
        await open_gates(handle)
        assert "needs a comment" in await refusal(handle, "request_changes", "alice")
        await decide(handle, "request_changes", "alice", comment="cap the liability")
        for _ in range(200):  # the draft runs again with the comment, and the gate reopens for round 2
            pending = await handle.query("pending")
            if pending and pending[0]["round"] == 2:
                break
            await asyncio.sleep(0.05)
        state = await handle.query("state")
        assert state["draft"] == {"text": "c", "notes": "cap the liability"}
        assert "rounds of changes" in await refusal(handle, "request_changes", "alice", comment="again")
        await decide(handle, "approve", "alice")  # a new round: the same person decides again
        out = await handle.result()
    assert out.steps == ["draft", "draft", "legal", "send"]
    assert [r["status"] for r in out.approvals] == ["changes_requested", "approved"]


async def test_every_refusal_reason_and_nothing_in_history(dev_server, task_queue):
    """On the dev server, where a refused update leaves no event at all."""
    client = dev_server.client
    flow = gate_flow(
        {"approvers": ["alice"]},
        after=[{"name": "send", "agent": "echo", "input": "$draft"}, {"name": "final", "gate": {"approvers": ["bob"]}}],
    )
    async with running_worker(client, task_queue):
        handle = await start(client, flow_request(flow, {"text": "c"}, task_queue))
        await open_gates(handle)
        events_before = await quiet_history(handle)
        assert "has no gate 'nope'" in await refusal(handle, "approve", "alice", gate="nope")
        assert "'final' is not open" in await refusal(handle, "approve", "bob", gate="final")
        assert "'mallory' is not an approver" in await refusal(handle, "approve", "mallory")
        assert "does not take change requests" in await refusal(handle, "request_changes", "alice", comment="x")
        assert await quiet_history(handle) == events_before  # refused updates write nothing
        await decide(handle, "approve", "alice")
        await open_gates(handle)
        assert "'legal' is not open: it was approved by alice" in await refusal(handle, "approve", "alice")
        await handle.signal(
            "decision", GateDecision(gate="final", decision="approve", by="mallory")
        )  # refused, on record
        await decide(handle, "reject", "bob", gate="final", comment="no")
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
    assert "gate 'final' rejected by bob: no" in str(info.value.cause)


async def test_racing_decisions_count_exactly_the_quorum(time_env, task_queue):
    people = ["a1", "a2", "a3", "a4", "a5"]
    async with running_worker(time_env.client, task_queue):
        handle = await start(
            time_env.client, request(gate_flow({"approvers": people, "quorum": 2}), {"text": "c"}, task_queue)
        )
        await open_gates(handle)
        results = await asyncio.gather(*(decide(handle, "approve", p) for p in people), return_exceptions=True)
        out = await handle.result()
    accepted = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, WorkflowUpdateFailedError)]
    assert len(accepted) + len(refused) == 5
    [record] = out.approvals
    assert len(record["decisions"]) == 2 == sum(1 for r in accepted if r["status"] in ("open", "approved"))
    assert all("not open" in str(r.cause) for r in refused)


async def test_signal_decisions_are_validated_the_same_way(time_env, task_queue):
    async with running_worker(time_env.client, task_queue):
        handle = await start(time_env.client, request(gate_flow({"approvers": ["alice"]}), {"text": "c"}, task_queue))
        await open_gates(handle)
        await handle.signal("decision", GateDecision(gate="legal", decision="approve", by="mallory"))
        assert (await handle.query("pending"))[0]["approvals"] == 0
        await handle.signal("decision", GateDecision(gate="legal", decision="approve", by="alice"))
        out = await handle.result()
    assert out.approvals[0]["decided_by"] == "alice"


async def test_a_gate_whose_condition_does_not_hold_is_skipped(time_env, task_queue):
    gate = {"approvers": ["alice"], "when": {"value": "$input.risk", "equals": "high"}}
    async with running_worker(time_env.client, task_queue):
        out = await (
            await start(time_env.client, request(gate_flow(gate), {"text": "c", "risk": "low"}, task_queue))
        ).result()
    assert out.steps == ["draft", "legal", "send"] and out.state["legal"]["status"] == "skipped"


async def test_groups_resolve_from_the_approvers_file(time_env, task_queue, tmp_path, monkeypatch):
    (tmp_path / "people.yaml").write_text("groups:\n  legal: [dana, eve]\n")
    monkeypatch.setenv("ENSEMBLE_APPROVERS", str(tmp_path / "people.yaml"))
    async with running_worker(time_env.client, task_queue):
        handle = await start(
            time_env.client, request(gate_flow({"approvers": ["group:legal", "zed"]}), {"text": "c"}, task_queue)
        )
        [pending] = await open_gates(handle)
        assert pending["approvers"] == ["dana", "eve", "zed"]
        await decide(handle, "approve", "eve")
        await handle.result()


async def test_an_unknown_group_fails_the_run_clearly(time_env, task_queue, tmp_path, monkeypatch):
    (tmp_path / "people.yaml").write_text("groups:\n  legal: [dana]\n")
    monkeypatch.setenv("ENSEMBLE_APPROVERS", str(tmp_path / "people.yaml"))
    async with running_worker(time_env.client, task_queue):
        handle = await start(
            time_env.client, request(gate_flow({"approvers": ["group:board"]}), {"text": "c"}, task_queue)
        )
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
    assert "approver group 'board' is not in" in str(info.value.cause.cause)


async def test_a_parked_run_holds_no_cache_and_wakes_on_a_decision(time_env, task_queue):
    """With no workflow cache every activation replays the run from history: a parked run costs the
    worker nothing, and a decision still finds its gate. (No queries or refused updates here: on this
    server they hold time skipping for an uncached run.)"""
    gate = {"approvers": ["alice", "bob"], "quorum": 2, "timeout": "1d", "escalate": [{"approvers": ["carol"]}]}
    async with running_worker(time_env.client, task_queue, max_cached_workflows=0):
        handle = await start(time_env.client, request(gate_flow(gate), {"text": "c"}, task_queue))
        for _ in range(200):  # the gate is open once its notification is sent
            events = [e async for e in handle.fetch_history_events()]
            if (
                len([e for e in events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED]) == 3
            ):  # draft, approvers, notify
                break
            await asyncio.sleep(0.05)
        await decide(handle, "approve", "alice")
        await time_env.sleep(timedelta(days=1, minutes=1))
        result = await decide(handle, "approve", "carol")
        assert (result["status"], result["approvals"], result["quorum"]) == (
            "approved",
            1,
            1,
        )  # tier-1 approvals do not count at tier 2
        out = await handle.result()
    [record] = out.approvals
    assert record["decided_by"] == "carol" and [e["to_tier"] for e in record["escalations"]] == [2]
    assert [d["by"] for d in record["decisions"]] == ["alice", "carol"]
