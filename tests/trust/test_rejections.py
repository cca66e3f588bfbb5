"""Rejections are final: a run people rejected is in the DLQ as rejected (who, why, when), and
neither `dlq redrive` nor `fork` asks its gate again. While parked, the inbox's search attribute
carries names only, never what the gate shows."""

from __future__ import annotations

import asyncio
import contextlib
import json

from temporalio.client import WorkflowFailureError

from ensemble.runs.inbox import prove
from ensemble.spec import GateDecision
from ensemble.spec import protocol as attributes
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


async def test_a_rejected_run_is_listed_as_rejected_and_cannot_be_redriven_or_forked(dev_server, task_queue):
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
    redrive = await asyncio.to_thread(run_cli, ["dlq", "redrive", handle.id], env)
    assert redrive.returncode == 1 and len(redrive.stderr.strip().splitlines()) == 1
    assert "was rejected at gate 'legal' by alice (too risky): a rejection is final" in redrive.stderr
    fork = await asyncio.to_thread(run_cli, ["fork", handle.id, "--from-step", "draft"], env)
    assert fork.returncode == 1 and "a rejection is final" in fork.stderr
