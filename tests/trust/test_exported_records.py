"""An exported history is a record on its own: `history --out` writes the values the run stored by
reference (over 256 KiB, in the payload store) into the file, so `audit FILE` and `replay FILE`
need neither the server nor the store."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from ensemble.spec import GateDecision
from tests.conftest import run_cli, running_worker
from tests.trust.proofs import ensure_keys, token
from tests.trust.test_proven_decisions import parked


def references(node: Any) -> int:
    """Payloads in a history's JSON that are references to the payload store."""
    if isinstance(node, list):
        return sum(references(x) for x in node)
    if not isinstance(node, dict):
        return 0
    kind = node.get("metadata", {}).get("messageType") if isinstance(node.get("metadata"), dict) else None
    own = kind is not None and base64.b64decode(kind) == b"temporal.api.sdk.v1.ExternalStorageReference"
    return own + sum(references(v) for v in node.values())


BIG = "clause " * 50_000  # 350 KB: the run's input, the draft and what the gate shows go by reference


async def approved_run(dev_server, task_queue):
    """A run of 350 KB values that alice approved with a proof, ended."""
    ensure_keys("alice", "bob")
    async with running_worker(dev_server.client, task_queue):
        handle, gate = await parked(dev_server, task_queue, text=BIG)
        d = GateDecision(gate="legal", decision="approve", by="alice")
        await handle.execute_update(
            "decide",
            d.model_copy(update={"proof": token("alice", d, run=handle.id, gate="legal", digest=gate["digest"])}),
        )
        await handle.result()
    return handle


async def test_an_exported_history_is_audited_and_replayed_without_the_payload_store(dev_server, task_queue, tmp_path):
    handle = await approved_run(dev_server, task_queue)
    raw = json.loads((await handle.fetch_history()).to_json())
    assert references(raw) >= 3  # the server's history holds references
    env = dev_server.env()
    record = tmp_path / "record.json"
    out = await asyncio.to_thread(run_cli, ["history", handle.id, "--out", str(record)], env)
    assert out.returncode == 0, out.stderr
    assert references(json.loads(record.read_text())) == 0
    alone = {**env, "ENSEMBLE_PAYLOAD_STORE": "off", "ENSEMBLE_HOME": str(tmp_path / "elsewhere")}
    audited = await asyncio.to_thread(run_cli, ["audit", str(record), "--json"], alone)
    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert json.loads(audited.stdout)["decisions"][0]["verified"] is True
    replayed = await asyncio.to_thread(run_cli, ["replay", str(record)], alone)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr


async def test_a_history_that_keeps_references_needs_the_store_and_says_so(dev_server, task_queue, tmp_path):
    handle = await approved_run(dev_server, task_queue)
    env = dev_server.env()
    record = tmp_path / "record.json"
    out = await asyncio.to_thread(run_cli, ["history", handle.id, "--keep-references", "--out", str(record)], env)
    assert out.returncode == 0, out.stderr
    assert references(json.loads(record.read_text())) >= 3  # as the server holds it
    with_store = await asyncio.to_thread(run_cli, ["audit", str(record), "--json"], env)
    assert with_store.returncode == 0, with_store.stdout + with_store.stderr
    assert json.loads(with_store.stdout)["decisions"][0]["verified"] is True
    alone = {**env, "ENSEMBLE_PAYLOAD_STORE": "off"}
    for command in (["audit", str(record)], ["replay", str(record)]):
        refused = await asyncio.to_thread(run_cli, command, alone)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        [line] = refused.stderr.strip().splitlines()
        assert "by reference to a payload store" in line and "ENSEMBLE_PAYLOAD_STORE" in line, line
    data = json.loads(record.read_text())
    start = data["events"][0]["workflowExecutionStartedEventAttributes"]["input"]["payloads"][0]
    start["data"] = base64.b64encode(b'{"driverName": ').decode()  # a reference cut short
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(data))
    malformed = await asyncio.to_thread(run_cli, ["audit", str(broken)], env)
    assert malformed.returncode == 2 and "reference to the payload store in it is malformed" in malformed.stderr
    assert len(malformed.stderr.strip().splitlines()) == 1, malformed.stderr
    elsewhere = {**env, "ENSEMBLE_PAYLOAD_STORE": f"file:{tmp_path / 'empty'}"}
    missing = await asyncio.to_thread(run_cli, ["audit", str(record)], elsewhere)
    assert missing.returncode != 0 and "missing from the payload store" in missing.stderr, missing.stderr
    assert "Traceback" not in missing.stderr and len(missing.stderr.strip().splitlines()) == 1, missing.stderr
