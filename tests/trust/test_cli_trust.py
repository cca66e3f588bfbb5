"""The README's approval commands on a fresh state directory: `keys init`, a run that parks at a
gate, `approve --by alice` (signed with alice's local key), `audit`; and without a key, refused."""

from __future__ import annotations

import json
import os
import stat

from tests.conftest import run_cli

CONTRACT = "examples/contract_review/contract.txt"


def test_keys_init_then_approve_and_audit_through_the_cli(dev_server, task_queue, tmp_path):
    home = tmp_path / "home"
    env = dev_server.env(
        ENSEMBLE_TASK_QUEUE=task_queue,
        ENSEMBLE_HOME=str(home),
        TEMPORAL_ADDRESS=dev_server.info.address,
        TEMPORAL_NAMESPACE="default",
    )
    # Without keys, a proven gate refuses a bare name, in one line.
    parked = run_cli(["run", "contract_review", "--input", f"@{CONTRACT}", "--wait", "--json"], env)
    assert parked.returncode == 0, parked.stderr
    first = json.loads(parked.stdout)
    assert first["status"] == "waiting_for_approval" and first["pending_approvals"][0]["identity"] == "proven"
    refused = run_cli(["approve", first["run_id"], "--gate", "legal", "--by", "alice"], env)
    assert refused.returncode == 1 and "takes proven decisions only" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    made = run_cli(["keys", "init"], env)
    assert made.returncode == 0, made.stderr
    assert "alice: created key alice-" in made.stdout
    pem = home / "keys" / "alice.pem"
    assert stat.S_IMODE(os.stat(pem).st_mode) == 0o600 and stat.S_IMODE(os.stat(pem.parent).st_mode) == 0o700

    parked = run_cli(["run", "contract_review", "--input", f"@{CONTRACT}", "--wait", "--json"], env)
    run_id = json.loads(parked.stdout)["run_id"]
    approved = run_cli(["approve", run_id, "--gate", "legal", "--by", "alice", "--json"], env)
    assert approved.returncode == 0, approved.stderr
    out = json.loads(approved.stdout)
    assert out["status"] == "approved" and out["run"]["status"] == "completed"
    [decision] = out["run"]["result"]["legal"]["decisions"]
    assert decision["verified"] is True and decision["subject"] == "alice" and decision["key_id"].startswith("alice-")
    audit = run_cli(["audit", run_id, "--json"], env)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    report = json.loads(audit.stdout)
    assert report["ok"] and [(d["by"], d["verified"]) for d in report["decisions"]] == [("alice", True)]
