"""Encryption at rest: the AES-256-GCM payload codec, keys from the environment or an owner-only
key file, failures encoded too, rotation across a parked run, and every reader decoding."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from temporalio.api.common.v1 import Payload

from ensemble.runtime import codec
from ensemble.spec.errors import InputError
from tests.conftest import ROOT, run_cli

KEY_A, KEY_B = codec.new_key(), codec.new_key()
REQUEST = ROOT / "examples" / "procurement" / "request.json"


def raw_text(dev_server) -> str:
    db = Path(dev_server.info.db)
    return "".join(f.read_bytes().decode("latin-1") for f in (db, db.with_name(db.name + "-wal")) if f.exists())


def temporal_show(dev_server, run_id: str, *extra: str) -> subprocess.CompletedProcess:
    temporal = str(Path(sys.executable).parent / "temporal")
    args = [temporal, "workflow", "show", "-w", run_id, "-o", "json", "--address", dev_server.info.address, *extra]
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def decoded_payloads(value) -> str:
    """Every payload's metadata and data in `temporal workflow show -o json` (base64 there), as text."""
    found = []
    if isinstance(value, dict):
        if "data" in value and isinstance(value["data"], str):
            found.append(base64.b64decode(value["data"]).decode("latin-1"))
            found += [base64.b64decode(v).decode("latin-1") for v in (value.get("metadata") or {}).values()]
        found += [decoded_payloads(v) for v in value.values()]
    elif isinstance(value, list):
        found += [decoded_payloads(v) for v in value]
    return "\n".join(found)


async def test_payloads_round_trip_and_rotate():
    old = codec.AesGcmCodec([("a", codec.parse_keys(f"a:{KEY_A}", "t")[0][1])])
    both = codec.AesGcmCodec(codec.parse_keys(f"b:{KEY_B},a:{KEY_A}", "t"))
    original = Payload(metadata={"encoding": b"json/plain"}, data=b'{"secret": "plans"}')
    [sealed] = await old.encode([original])
    assert sealed.metadata["encryption-key-id"] == b"a" and b"plans" not in sealed.data
    assert await both.decode([sealed]) == [original]  # old keys decrypt
    [resealed] = await both.encode([original])
    assert resealed.metadata["encryption-key-id"] == b"b"  # the first key encrypts
    with pytest.raises(codec.CodecError, match="encrypted with key 'b', which this process does not have"):
        await old.decode([resealed])
    tampered = Payload(metadata=dict(sealed.metadata), data=sealed.data[:-1] + bytes([sealed.data[-1] ^ 1]))
    with pytest.raises(codec.CodecError, match="does not decrypt"):
        await old.decode([tampered])
    assert await old.decode([original]) == [original]  # written before encryption: read as it is


def test_keys_from_env_or_an_owner_only_file(tmp_path, monkeypatch):
    monkeypatch.delenv(codec.KEYS_ENV, raising=False)
    monkeypatch.delenv(codec.KEY_FILE_ENV, raising=False)
    assert codec.configured_keys() == []
    key_file = tmp_path / "codec.keys"
    key_file.write_text(f"# rotated 2026-12\nb:{KEY_B}\na:{KEY_A}\n")
    key_file.chmod(0o644)
    monkeypatch.setenv(codec.KEY_FILE_ENV, str(key_file))
    with pytest.raises(InputError, match=f"is readable by others \\(mode 0644\\); chmod 600 {key_file}"):
        codec.configured_keys()
    key_file.chmod(0o600)
    assert [kid for kid, _ in codec.configured_keys()] == ["b", "a"]
    monkeypatch.setenv(codec.KEYS_ENV, "x:c2hvcnQ=")
    with pytest.raises(InputError, match="has 5 bytes, AES-256 needs 32"):
        codec.configured_keys()


async def test_encrypted_runs_leave_no_plain_text_at_rest_and_read_back_for_a_key_holder(
    dev_server, task_queue, tmp_path
):
    marker = "Quokkazebra Orchidwhistle " + os.urandom(4).hex()
    env = dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue, ENSEMBLE_CODEC_KEYS=f"a:{KEY_A}")
    done = run_cli(["run", "hello", "--input", json.dumps({"name": marker}), "--wait", "--json"], env)
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]

    failing = tmp_path / "fails.flow.yaml"
    failing.write_text(
        yaml.safe_dump(
            {
                "name": "fails",
                "agents": [
                    {
                        "name": "order",
                        "kind": "function",
                        "handler": "tests.secret_agents:fail_with_text",
                        "retry": {"max_attempts": 1},
                    }
                ],
                "steps": [{"agent": "order", "input": {"text": "$input.text"}}],
            }
        )
    )
    failed = run_cli(["run", str(failing), "--input", json.dumps({"text": marker}), "--wait", "--json"], env)
    assert failed.returncode == 1, failed.stderr
    failed_id = json.loads(failed.stdout)["run_id"]

    status = run_cli(["status", run_id, "--json"], env)
    assert status.returncode == 0, status.stderr
    assert marker in status.stdout
    failed_status = json.loads(run_cli(["status", failed_id, "--json"], env).stdout)
    assert f"order {marker} could not be placed" in failed_status["error"]
    assert marker in run_cli(["dlq", "show", failed_id, "--json"], env).stdout
    page = tmp_path / "t.html"
    assert run_cli(["timeline", run_id, "--out", str(page)], env).returncode == 0
    assert "Quokkazebra" in page.read_text()  # summaries are cut at 40 characters

    assert marker not in raw_text(dev_server)
    shown = temporal_show(dev_server, failed_id)
    assert shown.returncode == 0, shown.stderr
    assert marker not in shown.stdout and "Encoded failure" in shown.stdout
    assert marker not in decoded_payloads(json.loads(shown.stdout))
    assert "binary/encrypted" in decoded_payloads(json.loads(shown.stdout))

    # fork reads the recorded results back through the codec; its new run is encrypted too
    forked = run_cli(["fork", run_id, "--from-step", "analyse", "--json"], env)
    assert forked.returncode == 0, forked.stderr
    fork_id = json.loads(forked.stdout)["run_id"]
    result = run_cli(["result", fork_id, "--json"], env)
    assert result.returncode == 0 and marker in result.stdout, result.stderr
    assert marker not in raw_text(dev_server)

    exported = tmp_path / "history.json"
    assert run_cli(["history", run_id, "--out", str(exported)], env).returncode == 0
    assert marker not in exported.read_text()  # exported as stored: encrypted
    replayed = run_cli(["replay", str(exported), "--json"], env)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    # without the key the file cannot be read, and replay says so instead of reporting a divergence
    keyless = run_cli(["replay", str(exported)], dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue))
    assert keyless.returncode == 1 and "Traceback" not in keyless.stderr, keyless.stdout + keyless.stderr
    assert "not replayed, its payloads are encrypted with key 'a'" in keyless.stdout, keyless.stdout
    assert keyless.stdout.strip().endswith("0 replayed, 0 diverged, 1 not readable here"), keyless.stdout
    plain = tmp_path / "plain.json"
    assert run_cli(["history", failed_id, "--decode", "--out", str(plain)], env).returncode == 0
    assert marker in decoded_payloads(json.loads(plain.read_text())) and "Encoded failure" not in plain.read_text()
    assert f"order {marker} could not be placed" in plain.read_text()
    replayed = run_cli(
        ["replay", str(plain), "--json"], dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue)
    )  # no key needed
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr

    without = run_cli(
        ["status", run_id, "--json"], dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue, ENSEMBLE_CODEC_KEYS=f"b:{KEY_B}")
    )
    assert without.returncode == 1
    assert len(without.stderr.strip().splitlines()) == 1 and "key 'a'" in without.stderr, without.stderr


async def test_a_parked_run_survives_key_rotation(dev_server, task_queue, tmp_path):
    comment = "approved-under-key-b " + os.urandom(4).hex()
    env_a = dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue, ENSEMBLE_CODEC_KEYS=f"a:{KEY_A}")
    env_ba = dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue, ENSEMBLE_CODEC_KEYS=f"b:{KEY_B},a:{KEY_A}")
    worker = subprocess.Popen(
        [sys.executable, "worker.py"],
        cwd=ROOT,
        env=env_a,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        parked = run_cli(["run", "procurement", "--input", f"@{REQUEST}", "--wait", "--json"], env_a)
        assert parked.returncode == 0, parked.stderr
        view = json.loads(parked.stdout)
        assert view["status"] == "waiting_for_approval"
    finally:
        worker.kill()
        worker.wait(timeout=10)
    run_id = view["run_id"]
    worker = subprocess.Popen(
        [sys.executable, "worker.py"],
        cwd=ROOT,
        env=env_ba,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for who in ("dave", "erin"):
            decided = run_cli(
                ["approve", run_id, "--gate", "committee", "--by", who, "--comment", comment, "--json"], env_ba
            )
            assert decided.returncode == 0, decided.stderr
        result = run_cli(["result", run_id, "--json"], env_ba)
        assert result.returncode == 0, result.stderr
    finally:
        worker.kill()
        _, err = worker.communicate(timeout=10)
    assert json.loads(result.stdout)["status"] == "completed", result.stdout + err.decode()
    history = await dev_server.client.get_workflow_handle(run_id).fetch_history()  # raw, as stored
    kids = [
        p.metadata.get("encryption-key-id")
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        for p in e.activity_task_scheduled_event_attributes.input.payloads
    ]
    assert kids[0] == b"a" and kids[-1] == b"b"  # parked under key a, finished under key b
    assert comment not in raw_text(dev_server)
    decided = run_cli(["status", run_id, "--json"], env_ba)
    assert decided.returncode == 0 and json.loads(decided.stdout)["status"] == "completed", decided.stderr
