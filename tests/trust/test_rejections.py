"""Rejections are final: a run people rejected is in the DLQ as rejected (who, why, when), and
neither `dlq redrive` nor `fork` asks its gate again; asking again is a new run that names the
rejected one (`EnsembleClient.ask_again`, `run FLOW --again RUN_ID`). While parked, the inbox's
search attribute carries names only, never what the gate shows."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from temporalio.client import WorkflowFailureError

from ensemble.authoring.flows import parse_flow
from ensemble.client import EnsembleClient
from ensemble.runs.history import read_history
from ensemble.runs.inbox import prove
from ensemble.spec import GateDecision
from ensemble.spec import protocol as attributes
from ensemble.spec.errors import InputError
from tests.conftest import run_cli, running_worker
from tests.flowkit import request, start

SECRET_SHOWN = "clause 7: unlimited liability"
FLOW = {
    "name": "rejectable",
    "imports": ["tests.agents"],
    "steps": [
        {"name": "draft", "agent": "echo", "input": {"text": "$input.text"}},
        {"name": "legal", "gate": {"approvers": ["alice"], "show": "$draft"}},
        {"name": "send", "agent": "echo", "input": "$draft"},
    ],
}


async def parks(handle) -> None:
    for _ in range(300):
        if await handle.query("pending"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the gate never opened")


async def test_a_rejected_run_is_listed_as_rejected_and_cannot_be_redriven_or_forked(
    dev_server, task_queue, monkeypatch
):
    async with running_worker(dev_server.client, task_queue):
        handle = await start(dev_server.client, request(FLOW, {"text": SECRET_SHOWN}, task_queue))
        for _ in range(300):
            if await handle.query("pending"):
                break
            await asyncio.sleep(0.05)
        # Visibility (never encrypted) holds ids and names, not the content the gate shows.
        for _ in range(100):
            attrs = (await handle.describe()).typed_search_attributes
            if attrs.get(attributes.PENDING):
                break
            await asyncio.sleep(0.1)
        pending_attr = attrs.get(attributes.PENDING)
        assert pending_attr and "legal" in pending_attr and "clause 7" not in pending_attr
        decision = GateDecision(gate="legal", decision="reject", by="alice", comment="too risky")
        await handle.execute_update("decide", await prove(handle, decision))
        with contextlib.suppress(WorkflowFailureError):  # rejected: the run fails
            await handle.result()
    env = dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue)
    for _ in range(60):
        listed = await asyncio.to_thread(run_cli, ["dlq", "list", "--json"], env)
        rows = [r for r in json.loads(listed.stdout or "[]") if r["run_id"] == handle.id]
        if rows:
            break
        await asyncio.sleep(0.5)
    [row] = rows
    assert row["failed_step"] == "legal" and row["agent"] == "(people)"
    assert row["rejected"]["by"] == "alice" and row["rejected"]["why"] == "too risky" and row["rejected"]["at"]
    assert row["asked_again_as"] is None  # not yet
    redrive = await asyncio.to_thread(run_cli, ["dlq", "redrive", handle.id], env)
    assert redrive.returncode == 1 and len(redrive.stderr.strip().splitlines()) == 1
    assert "was rejected at gate 'legal' by alice (too risky): a rejection is final" in redrive.stderr
    assert f"`starter.py run rejectable --again {handle.id}`" in redrive.stderr
    fork = await asyncio.to_thread(run_cli, ["fork", handle.id, "--from-step", "draft"], env)
    assert fork.returncode == 1 and "a rejection is final" in fork.stderr and f"--again {handle.id}`" in fork.stderr

    # Asking again: a new run of the same flow with the rejected run's input, naming it.
    monkeypatch.setenv("ENSEMBLE_TASK_QUEUE", task_queue)
    ensemble = EnsembleClient(dev_server.client)
    flow = parse_flow(FLOW, "test flow")
    before = (await dev_server.client.get_workflow_handle(handle.id).fetch_history()).events
    async with running_worker(dev_server.client, task_queue):
        again = await ensemble.ask_again(handle.id, flow=flow)
        assert again.run_id != handle.id and again.flow == "rejectable"
        new = dev_server.client.get_workflow_handle(again.run_id)
        await parks(new)
        await new.execute_update(
            "decide", await prove(new, GateDecision(gate="legal", decision="approve", by="alice", comment="fixed"))
        )
        await new.result()
    recorded = (await read_history(dev_server.client, again.run_id)).run_request
    assert recorded.input == {"text": SECRET_SHOWN} and recorded.asks_again is not None  # the rejected run's input
    view = await ensemble.status(again.run_id)
    assert view.status == "completed"
    assert view.asks_again == {
        "run_id": handle.id,
        "gate": "legal",
        "by": "alice",
        "why": "too risky",
        "at": row["rejected"]["at"],
    }
    report = await ensemble.audit(again.run_id)
    assert report["ok"] and report["asks_again"]["run_id"] == handle.id
    assert await (await new.describe()).memo() == {"asks_again": handle.id}
    # The dead-letter queue still lists the rejected run, now with the run that asks again.
    for _ in range(60):
        [listed_again] = [r for r in await ensemble.dead_letters() if r["run_id"] == handle.id]
        if listed_again["asked_again_as"]:
            break
        await asyncio.sleep(0.5)
    assert listed_again["asked_again_as"] == again.run_id
    shown = await asyncio.to_thread(run_cli, ["dlq", "show", handle.id], env)
    assert shown.returncode == 0 and f"asked again as: {again.run_id}" in shown.stdout, shown.stdout
    table = await asyncio.to_thread(run_cli, ["dlq", "list"], env)
    assert table.returncode == 0 and "asked again as" in table.stdout, table.stdout  # the id may be cut to fit
    # The rejected run is untouched: still rejected, nothing added to its history.
    assert (await dev_server.client.get_workflow_handle(handle.id).fetch_history()).events == before
    assert (await ensemble.status(handle.id)).status == "failed"

    # Only a rejected run can be asked again; an unknown one is bad input.
    with pytest.raises(InputError, match=f"run '{again.run_id}' is completed, not rejected"):
        await ensemble.ask_again(again.run_id, flow=flow)
    with pytest.raises(InputError, match="no run with id 'nope'"):
        await ensemble.ask_again("nope")
    other = parse_flow({**FLOW, "name": "other"}, "test flow")
    with pytest.raises(InputError, match="is a run of flow 'rejectable', not 'other'"):
        await ensemble.ask_again(handle.id, flow=other)
