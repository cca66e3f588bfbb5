"""Proven decisions on the dev server: a decision is accepted only with a proof that verifies
inside the update validator (right signer, run, gate, round, tier, digest; not expired, not used
before); refused ones write nothing to history; `audit` re-verifies and catches a tampered history;
an unmeetable quorum fails at the tier's opening; signals without proof are dropped."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError, WorkflowUpdateFailedError

from ensemble.logic.gates import GateBook, GateRefused
from ensemble.logic.proofs import ProofRefused, binding, digest, verify
from ensemble.runs.audit import audit_history, audit_run
from ensemble.runs.view import describe_run
from ensemble.runtime.converter import data_converter
from ensemble.spec import GateDecision, GateStep
from ensemble.spec.gate import TierTrust
from tests.conftest import ROOT, run_cli, running_worker
from tests.flowkit import request, start
from tests.trust.proofs import ensure_keys, token

FLOW = {
    "name": "proven",
    "imports": ["tests.agents"],
    "steps": [
        {"name": "draft", "agent": "echo", "input": {"text": "$input.text"}},
        {"name": "legal", "gate": {"approvers": ["alice", "bob"], "show": "$draft"}},
        {"name": "send", "agent": "echo", "input": "$draft"},
    ],
}
SHOWN = {"text": "contract v1"}


async def parked(dev_server, task_queue, flow=FLOW, text="contract v1"):
    handle = await start(dev_server.client, request(flow, {"text": text}, task_queue))
    for _ in range(300):
        gates = await handle.query("pending")
        if gates:
            return handle, gates[0]
        await asyncio.sleep(0.05)
    raise AssertionError("the gate never opened")


async def accepted_updates(handle) -> int:
    return sum(
        1
        for e in (await handle.fetch_history()).events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED
    )


async def refused(handle, decision: GateDecision) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await handle.execute_update("decide", decision)
    return str(info.value.cause)


async def test_a_signed_decision_approves_and_is_kept_as_evidence(dev_server, task_queue):
    ensure_keys("alice", "bob")
    async with running_worker(dev_server.client, task_queue):
        handle, gate = await parked(dev_server, task_queue)
        assert gate["identity"] == "proven" and gate["digest"] == digest(SHOWN)
        d = GateDecision(gate="legal", decision="approve", by="alice")
        proof = token("alice", d, run=handle.id, gate="legal", digest=gate["digest"])
        result = await handle.execute_update("decide", d.model_copy(update={"proof": proof}))
        outcome = await handle.result()
    assert result["status"] == "approved"
    [record] = outcome.approvals
    [entry] = record["decisions"]
    assert entry["verified"] is True and entry["subject"] == "alice" and entry["key_id"].startswith("alice-")
    assert entry["digest"] == digest(SHOWN) and record["identity"] == "proven"
    report = await audit_run(dev_server.client, handle.id)
    assert report.ok and [(d.by, d.verified) for d in report.decisions] == [("alice", True)]


async def test_forged_and_misbound_decisions_are_refused_with_nothing_in_history(dev_server, task_queue):
    ensure_keys("alice", "bob", "mallory")
    async with running_worker(dev_server.client, task_queue):
        handle, gate = await parked(dev_server, task_queue)
        d = GateDecision(gate="legal", decision="approve", by="alice")
        right = {"run": handle.id, "gate": "legal", "digest": gate["digest"]}
        cases = {
            "no proof": None,
            "signed with mallory's key": token("mallory", d, sub="alice", **right),
            "another run": token("alice", d, **{**right, "run": "other-run"}),
            "another gate": token("alice", d, **{**right, "gate": "finance"}),
            "another round": token("alice", d, round_=2, **right),
            "another digest": token("alice", d, **{**right, "digest": digest({"text": "contract v0"})}),
            "expired": token("alice", d, ttl=-5, **right),
            "another decision": token("alice", GateDecision(gate="legal", decision="reject", by="alice"), **right),
        }
        reasons = {name: await refused(handle, d.model_copy(update={"proof": proof})) for name, proof in cases.items()}
        # The raw `temporal` CLI, as in the issue: a name is not a proof.
        raw = await asyncio.to_thread(
            subprocess.run,
            [
                str(ROOT / ".venv" / "bin" / "temporal")
                if (ROOT / ".venv" / "bin" / "temporal").exists()
                else "temporal",
                "workflow",
                "update",
                "execute",
                "--address",
                dev_server.info.address,
                "-w",
                handle.id,
                "--name",
                "decide",
                "--identity",
                "mallory@evil",
                "--input",
                '{"gate":"legal","decision":"approve","by":"alice"}',
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert raw.returncode != 0 and "takes proven decisions only" in raw.stdout + raw.stderr
        assert await accepted_updates(handle) == 0
        assert (await handle.query("pending"))[0]["approvals"] == 0
        await handle.terminate("test over")
    assert "takes proven decisions only" in reasons["no proof"]
    assert "not a recorded key of its signer" in reasons["signed with mallory's key"]
    assert "another run" in reasons["another run"] and "another gate" in reasons["another gate"]
    assert "another round" in reasons["another round"] and "another digest" in reasons["another digest"]
    assert "expired" in reasons["expired"] and "another decision" in reasons["another decision"]


def test_a_used_proof_is_refused_and_the_clock_is_the_one_passed_in():
    ensure_keys("alice")
    from ensemble.identity import keys

    trust = TierTrust(people=["alice"], keys={"alice": keys.read_trust()["keys"]["alice"]})
    d = GateDecision(gate="legal", decision="approve", by="alice")
    expected = binding("run-1", "legal", 1, 1, d, "sha256:x")
    proof = token("alice", d, run="run-1", gate="legal", digest="sha256:x", jti="once")
    now = datetime.now(timezone.utc)
    assert verify(proof, d, expected, trust, now, set()).subject == "alice"
    with pytest.raises(ProofRefused, match="already used"):
        verify(proof, d, expected, trust, now, {"once"})
    with pytest.raises(ProofRefused, match="expired"):
        verify(proof, d, expected, trust, now + timedelta(hours=1), set())
    # The book keeps what it accepted: the same proof again is refused (here as a second decision).
    book = GateBook({"legal"})
    gate = book.start(GateStep(name="legal", gate={"approvers": ["alice"]}), "legal")
    gate.identity, gate.run_id, gate.digest = "proven", "run-1", "sha256:x"
    gate.enter_tier(1, ["alice"], 1, now, None, trust)
    book.apply(d.model_copy(update={"proof": proof}), now)
    assert "once" in book.seen_proofs
    with pytest.raises(GateRefused):
        book.check(d.model_copy(update={"proof": proof}), now)


async def test_audit_fails_a_history_rewritten_from_alice_to_bob(dev_server, task_queue, tmp_path):
    ensure_keys("alice", "bob")
    async with running_worker(dev_server.client, task_queue):
        handle, gate = await parked(dev_server, task_queue)
        d = GateDecision(gate="legal", decision="approve", by="alice")
        await handle.execute_update(
            "decide",
            d.model_copy(update={"proof": token("alice", d, run=handle.id, gate="legal", digest=gate["digest"])}),
        )
        await handle.result()
    history = await handle.fetch_history()
    clean = tmp_path / "clean.json"
    clean.write_text(history.to_json())
    data = json.loads(history.to_json())
    rewritten = 0
    for event in data["events"]:
        attrs = event.get("workflowExecutionUpdateAcceptedEventAttributes")
        if attrs:
            for payload in attrs["acceptedRequest"]["input"]["args"]["payloads"]:
                text = base64.b64decode(payload["data"]).decode()
                payload["data"] = base64.b64encode(text.replace('"by":"alice"', '"by":"bob"').encode()).decode()
                rewritten += '"by":"alice"' in text
    assert rewritten == 1
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(data))
    from temporalio.client import WorkflowHistory

    report = await audit_history(WorkflowHistory.from_json(handle.id, data), data_converter())
    assert (
        not report.ok
        and report.decisions[0].by == "bob"
        and "signed for 'alice', not 'bob'" in report.decisions[0].problem
    )
    env = dev_server.env()
    ok = await asyncio.to_thread(run_cli, ["audit", str(clean), "--json"], env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["decisions"][0]["verified"] is True
    bad = await asyncio.to_thread(run_cli, ["audit", str(tampered)], env)
    assert bad.returncode == 1 and "VERIFICATION FAILED" in bad.stdout


async def test_a_decision_signal_without_proof_is_dropped_and_the_run_stays_parked(dev_server, task_queue):
    ensure_keys("alice", "bob")
    async with running_worker(dev_server.client, task_queue):
        handle, gate = await parked(dev_server, task_queue)
        for _ in range(5):
            await handle.signal(
                "decision", GateDecision(gate="legal", decision="approve", by="alice", comment="x" * 3000)
            )
        await handle.signal("decision", GateDecision(gate="legal", decision="reject", by="bob", comment="y" * 5000))
        [still] = await handle.query("pending")  # answered after the signals were handled, in order
        assert still["approvals"] == 0
        too_long = await refused(handle, GateDecision(gate="legal", decision="approve", by="alice", comment="z" * 5000))
        assert "a comment is at most 4000 characters" in too_long
        d = GateDecision(gate="legal", decision="approve", by="alice")
        await handle.signal(
            "decision",
            d.model_copy(update={"proof": token("alice", d, run=handle.id, gate="legal", digest=gate["digest"])}),
        )
        outcome = await handle.result()
    assert outcome.approvals[0]["status"] == "approved"


async def test_a_quorum_that_cannot_be_met_fails_the_run_at_the_tier(dev_server, task_queue, tmp_path, monkeypatch):
    people = tmp_path / "people.yaml"
    people.write_text("groups:\n  solo: [alice]\n")
    monkeypatch.setenv("ENSEMBLE_APPROVERS", str(people))
    flow = {**FLOW, "steps": [FLOW["steps"][0], {"name": "legal", "gate": {"approvers": ["group:solo"], "quorum": 2}}]}
    async with running_worker(dev_server.client, task_queue):
        handle = await start(dev_server.client, request(flow, {"text": "contract v1"}, task_queue))
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), 60)
    error = (await describe_run(dev_server.client, handle.id)).error
    assert "quorum 2 cannot be met" in error and "resolve to 1 (alice)" in error


def test_refused_signals_are_counted_not_kept():
    book = GateBook({"legal"})
    gate = book.start(GateStep(name="legal", gate={"approvers": ["alice"]}), "legal")
    gate.identity = "proven"
    gate.enter_tier(1, ["alice"], 1, datetime.now(timezone.utc), None, TierTrust(people=["alice"]))
    with pytest.raises(GateRefused, match="at most 4000 characters"):
        book.apply(
            GateDecision(gate="legal", decision="approve", by="alice", comment="x" * 1_500_000),
            datetime.now(timezone.utc),
        )
    assert isinstance(book.refused, int) and not gate.decisions


async def test_a_flow_declaring_identity_asserted_believes_names_and_says_so(dev_server, task_queue):
    async with running_worker(dev_server.client, task_queue):
        handle, gate = await parked(dev_server, task_queue, {**FLOW, "identity": "asserted"})
        assert gate["identity"] == "asserted"
        await handle.execute_update("decide", GateDecision(gate="legal", decision="approve", by="alice"))
        outcome = await handle.result()
    [record] = outcome.approvals
    assert record["identity"] == "asserted" and record["decisions"][0]["verified"] is False
    report = await audit_run(dev_server.client, handle.id)
    assert report.ok and report.identity == "asserted" and report.decisions[0].identity == "asserted"
    assert "asserted" in report.decisions[0].problem
