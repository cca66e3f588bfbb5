"""Approval of a tool call: an irreversible MCP tool declared with `approval:` makes the agent's
activity end and the run park at gate `tool.pay`, whose content is the tool and its exact
arguments (their digest bound into every proof). Approved: the call runs with exactly those
arguments; rejected: the model gets the refusal as the tool's result; changes requested: the
model gets the comment. A proof for other arguments is refused. The MCP server's ledger says
what was paid."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import WorkflowUpdateFailedError

from ensemble.logic.proofs import digest
from ensemble.runs.view import describe_run
from ensemble.spec import GateDecision
from ensemble.spec.llm import held_call
from tests.conftest import running_worker
from tests.flowkit import request, start
from tests.llm_agents import REFUNDS, calls, llm_server, use_server  # noqa: F401
from tests.mcp_kit import ledger, mcp_flow, stdio_server, text
from tests.trust.proofs import ensure_keys, token

TOOLS = [
    {
        "name": "pay",
        "kind": "mcp",
        "server": "calc",
        "effect": "irreversible",
        "approval": {"approvers": ["alice"], "timeout": "2d"},
    }
]


async def parked(handle, count: int = 1) -> dict:
    """The open tool gate once `count` tool gates have opened on this run."""
    for _ in range(1200):
        gates = await handle.query("pending")
        if gates and gates[0]["round"] >= 1 and gates[0]["path"].endswith(f"#{count}"):
            return gates[0]
        await asyncio.sleep(0.05)
    raise AssertionError("the tool gate never opened")


def decision(handle, gate: dict, verdict: str, comment: str = "", shown: str | None = None) -> GateDecision:
    d = GateDecision(gate=gate["gate"], decision=verdict, by="alice", comment=comment)
    proof = token("alice", d, run=handle.id, gate=gate["path"], round_=gate["round"], digest=shown or gate["digest"])
    return d.model_copy(update={"proof": proof})


def tool_results(request: dict) -> list[str]:
    return [m["content"] for m in request["body"]["messages"] if m["role"] == "tool"]


async def _run(dev_server, task_queue, tmp_path, script, steps):
    ensure_keys("alice")
    book = tmp_path / "ledger.jsonl"
    flow = mcp_flow("openai:test-model", [stdio_server("calc", book)], TOOLS, ["pay"])
    async with running_worker(dev_server.client, task_queue):
        handle = await start(dev_server.client, request(flow, {"text": "pay bob"}, task_queue))
        for step in steps:
            await step(handle)
        outcome = await asyncio.wait_for(handle.result(), 120)
    return handle, outcome, ledger(book)


async def test_an_approved_call_runs_with_exactly_the_shown_arguments(
    dev_server, task_queue, llm_server, monkeypatch, tmp_path
):
    model = llm_server([calls(("pay", {"to": "bob", "amount": 5})), text("paid bob")])
    use_server(monkeypatch, model)
    seen = {}

    async def approve(handle):
        gate = await parked(handle)
        seen.update(gate)
        assert ledger(tmp_path / "ledger.jsonl") == []  # nothing paid while people decide
        desc = await handle.describe()
        # no agent holds a worker slot or a model connection while people decide; the gate's own
        # notification (`ensemble.notify`) may still be on its way
        held = [a.activity_type.name for a in desc.raw_description.pending_activities]
        assert [name for name in held if name != "ensemble.notify"] == []
        view = await describe_run(dev_server.client, handle.id)
        assert view.status == "waiting_for_approval" and view.pending_approvals[0]["gate"] == "tool.pay"
        assert [(s.name, s.status) for s in view.steps] == [("clerk", "completed"), ("clerk/tool.pay#1", "waiting")]
        result = await handle.execute_update("decide", decision(handle, gate, "approve"))
        assert result["status"] == "approved"

    handle, outcome, book = await _run(dev_server, task_queue, tmp_path, model, [approve])
    assert seen["gate"] == "tool.pay" and seen["approvers"] == ["alice"]
    assert seen["digest"] == digest(held_call("pay", {"to": "bob", "amount": 5}))
    assert outcome.output == {"clerk": "paid bob"}
    [paid] = book
    assert (
        paid["arguments"] == {"to": "bob", "amount": 5.0}
        and paid["status"] == "paid"
        and paid["key"].startswith(handle.id)
    )
    _, second = model.requests()
    assert '"paid": 5.0' in tool_results(second)[0]
    view = await describe_run(dev_server.client, handle.id)
    assert [s.name for s in view.steps] == ["clerk", "clerk/tool.pay#1", "clerk~1"]  # the continuation after approval
    assert view.usage.total_tokens == 30  # each model call counted once
    [record] = [a for a in outcome.approvals if a["gate"] == "tool.pay"]
    assert record["status"] == "approved" and record["decisions"][0]["verified"] is True


async def test_a_rejected_call_is_refused_to_the_model_which_goes_on(
    dev_server, task_queue, llm_server, monkeypatch, tmp_path
):
    model = llm_server([calls(("pay", {"to": "eve", "amount": 900})), text("could not pay")])
    use_server(monkeypatch, model)

    async def reject(handle):
        gate = await parked(handle)
        await handle.execute_update("decide", decision(handle, gate, "reject", "eve is not a supplier"))

    _, outcome, book = await _run(dev_server, task_queue, tmp_path, model, [reject])
    assert outcome.output == {"clerk": "could not pay"} and book == []
    assert tool_results(model.requests()[1]) == [
        "refused: alice did not approve this call of 'pay': eve is not a supplier"
    ]


async def test_requested_changes_go_back_to_the_model(dev_server, task_queue, llm_server, monkeypatch, tmp_path):
    model = llm_server(
        [calls(("pay", {"to": "bob", "amount": 5})), calls(("pay", {"to": "bob", "amount": 4})), text("paid 4")]
    )
    use_server(monkeypatch, model)

    async def change(handle):
        gate = await parked(handle, 1)
        await handle.execute_update("decide", decision(handle, gate, "request_changes", "pay 4, not 5"))

    async def approve(handle):
        gate = await parked(handle, 2)
        assert gate["digest"] == digest(held_call("pay", {"to": "bob", "amount": 4}))
        await handle.execute_update("decide", decision(handle, gate, "approve"))

    _, outcome, book = await _run(dev_server, task_queue, tmp_path, model, [change, approve])
    assert outcome.output == {"clerk": "paid 4"}
    assert [(e["arguments"]["amount"], e["status"]) for e in book] == [(4.0, "paid")]
    assert tool_results(model.requests()[1]) == [
        "not run: alice asks for changes before this call may run: pay 4, not 5"
    ]


async def test_a_decision_bound_to_other_arguments_is_refused(
    dev_server, task_queue, llm_server, monkeypatch, tmp_path
):
    model = llm_server([calls(("pay", {"to": "bob", "amount": 5})), text("paid")])
    use_server(monkeypatch, model)

    async def forged_then_right(handle):
        gate = await parked(handle)
        other = digest(held_call("pay", {"to": "bob", "amount": 5000}))
        with pytest.raises(WorkflowUpdateFailedError) as info:
            await handle.execute_update("decide", decision(handle, gate, "approve", shown=other))
        assert "another digest" in str(info.value.cause)
        assert ledger(tmp_path / "ledger.jsonl") == []
        await handle.execute_update("decide", decision(handle, gate, "approve"))

    _, _, book = await _run(dev_server, task_queue, tmp_path, model, [forged_then_right])
    assert [e["arguments"]["amount"] for e in book] == [5.0]


async def test_a_python_tool_can_wait_for_approval_too(dev_server, task_queue, llm_server, monkeypatch, tmp_path):
    ensure_keys("alice")
    model = llm_server([calls(("refund", {"order_id": "A-7", "amount": 20})), text("refunded")])
    use_server(monkeypatch, model)
    approval = {"approvers": ["alice"]}
    tools = [{"name": "refund", "handler": "tests.llm_agents:refund", "effect": "irreversible", "approval": approval}]
    flow = mcp_flow("openai:test-model", [], tools, ["refund"])
    flow["imports"] = ["tests.llm_agents"]
    async with running_worker(dev_server.client, task_queue):
        handle = await start(dev_server.client, request(flow, {"text": "refund A-7"}, task_queue))
        gate = await parked(handle)
        assert gate["gate"] == "tool.refund"
        assert len(model.requests()) == 1  # the model waits too: nothing is called while people decide
        await handle.execute_update("decide", decision(handle, gate, "approve"))
        outcome = await asyncio.wait_for(handle.result(), 120)
    assert outcome.output == {"clerk": "refunded"}
    assert tool_results(model.requests()[1]) == ['{"refunded": 20.0}']
    [done] = [r for r in REFUNDS if r["run_id"] == handle.id]  # ran once, with its idempotency key
    assert done["amount"] == 20.0 and done["key"].startswith(handle.id)
