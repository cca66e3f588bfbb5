"""The README's approval commands on a fresh state directory: `keys init`, a run that parks at a
gate, `approve --by alice` (signed with alice's local key), `audit`; and without a key, refused.
A rejected run asked again: `run FLOW --again RUN_ID`, named by the new run's `status` and `audit`."""

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


def test_a_rejected_run_is_asked_again_in_a_new_run_that_names_it(dev_server, task_queue):
    env = dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue)
    parked = run_cli(["run", "contract_review", "--input", f"@{CONTRACT}", "--wait", "--json"], env)
    assert parked.returncode == 0, parked.stderr
    old = json.loads(parked.stdout)["run_id"]
    rejected = run_cli(["reject", old, "--gate", "legal", "--by", "alice", "--comment", "liability uncapped"], env)
    assert rejected.returncode == 0 and "rejected by alice: liability uncapped" in rejected.stdout, rejected.stderr
    redrive = run_cli(["dlq", "redrive", old], env)
    assert redrive.returncode == 1 and len(redrive.stderr.strip().splitlines()) == 1
    assert (
        f"a rejection is final and a redrive would ask again; ask again in a new run that names it: `starter.py run contract_review --again {old}`"
        in redrive.stderr
    )

    again = run_cli(["run", "contract_review", "--again", old, "--wait", "--json"], env)  # the old run's input
    assert again.returncode == 0, again.stderr
    new = json.loads(again.stdout)
    assert new["run_id"] != old and new["status"] == "waiting_for_approval"
    approved = run_cli(["approve", new["run_id"], "--gate", "legal", "--by", "alice", "--json"], env)
    assert approved.returncode == 0, approved.stderr
    assert json.loads(approved.stdout)["run"]["status"] == "completed"

    status = run_cli(["status", new["run_id"], "--json"], env)
    view = json.loads(status.stdout)
    assert view["status"] == "completed"
    assert view["asks_again"]["run_id"] == old and view["asks_again"]["by"] == "alice"
    line = f"asks again after rejected run {old} (rejected by alice at gate 'legal': liability uncapped)"
    assert line in " ".join(run_cli(["status", new["run_id"]], {**env, "COLUMNS": "400"}).stdout.split())
    audit = run_cli(["audit", new["run_id"]], {**env, "COLUMNS": "400"})
    assert audit.returncode == 0 and line in " ".join(audit.stdout.split())
    # (the old run staying rejected, and a run that was not rejected: tests/trust/test_rejections.py)
    bad = run_cli(["run", "contract_review", "--again", "no-such-run"], env)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "no run with id 'no-such-run'" in bad.stderr
