"""A non-approver who may signal a parked run cannot end it: the server Ensemble starts refuses
a signal over 1 MiB before anything is written, and more than MAX_SIGNALS signals per run
(docs/security.md, Decisions by signal). Sent the way an attacker would: the raw `temporal` CLI
and the SDK's plain client, with no Ensemble converter or payload store."""

from __future__ import annotations

import json
import subprocess

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.service import RPCError

from ensemble.runtime import server
from ensemble.spec import GateDecision
from tests.conftest import running_worker
from tests.trust.proofs import ensure_keys, token
from tests.trust.test_proven_decisions import parked

COMMENT = "x" * 1_500_000


def test_the_embedded_server_bounds_what_signals_can_write(dev_server):
    cmd = server.command(dev_server.info)
    values = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--dynamic-config-value"]
    assert "limit.blobSize.error=1048576" in values
    assert f"history.maximumSignalsPerExecution={server.MAX_SIGNALS}" in values
    # every payload Ensemble writes fits: larger ones go by reference, over 256 KiB
    from ensemble.runtime.payloads import DEFAULT_THRESHOLD, INLINE_LIMIT

    assert DEFAULT_THRESHOLD * 2 <= INLINE_LIMIT == 1048576


async def test_a_flood_of_large_signals_leaves_the_run_parked_small_and_decidable(dev_server, task_queue, tmp_path):
    ensure_keys("alice", "bob")
    raw = await Client.connect(dev_server.info.address)  # no Ensemble converter, no payload store
    async with running_worker(dev_server.client, task_queue):
        handle, gate = await parked(dev_server, task_queue)
        flood = raw.get_workflow_handle(handle.id)
        refused = 0
        for i in range(34):
            with pytest.raises(RPCError) as err:
                await flood.signal(
                    "decision", {"gate": "legal", "decision": "approve", "by": "mallory", "comment": f"{i}{COMMENT}"}
                )
            assert "size exceeds limit" in str(err.value)
            refused += 1
        big = tmp_path / "signal.json"
        big.write_text(json.dumps({"gate": "legal", "decision": "approve", "by": "mallory", "comment": COMMENT}))
        cli = subprocess.run(
            [
                server.temporal_binary(),
                "workflow",
                "signal",
                "--address",
                dev_server.info.address,
                "-w",
                handle.id,
                "--name",
                "decision",
                "--input-file",
                str(big),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode != 0 and "size exceeds limit" in cli.stderr
        refused += 1
        # signals under the size limit are written, up to the cap per run; the flow drops them
        small = {"gate": "legal", "decision": "approve", "by": "mallory", "comment": "y" * 50_000}
        for _ in range(server.MAX_SIGNALS):
            await flood.signal("decision", small)
        with pytest.raises(RPCError, match="limit for signal events"):
            await flood.signal("decision", small)
        [still] = await handle.query("pending")
        assert still["approvals"] == 0
        assert (await handle.describe()).status.name == "RUNNING"
        history = await handle.fetch_history()
        signaled = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]
        size = sum(e.ByteSize() for e in history.events)
        assert refused == 35 and len(signaled) == server.MAX_SIGNALS
        assert size < 1024 * 1024, size  # 35 x 1.5 MB would have been 52 MB
        d = GateDecision(gate="legal", decision="approve", by="alice")  # the update path is not capped
        await handle.execute_update(
            "decide",
            d.model_copy(update={"proof": token("alice", d, run=handle.id, gate="legal", digest=gate["digest"])}),
        )
        outcome = await handle.result()
    assert outcome.approvals[0]["status"] == "approved" and outcome.approvals[0]["decided_by"] == "alice"


def test_the_cluster_settings_in_deploy_bound_signals_the_same_way():
    import yaml

    from tests.conftest import ROOT

    compose = yaml.safe_load((ROOT / "deploy/compose/dynamicconfig/ensemble.yaml").read_text())
    helm = yaml.safe_load((ROOT / "deploy/kubernetes/temporal/values.yaml").read_text())["server"]["dynamicConfig"]
    for config in (compose, helm):
        for key in ("limit.blobSize.error", "history.maximumSignalsPerExecution"):
            assert config[key] == [{"value": server.DYNAMIC_CONFIG[key]}], key
