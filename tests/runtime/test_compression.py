"""Compressed payloads (ENSEMBLE_PAYLOAD_COMPRESSION): the format and its bounds, and runs written
compressed, read back by every reader with compression off again, under encryption, and through
the codec endpoint."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload

from ensemble.runtime import codec, compression
from ensemble.runtime.compression import ENCODING, CompressionError, deflate, inflate
from ensemble.spec import RunRequest
from ensemble.spec.errors import InputError
from tests.conftest import run_cli
from tests.runtime.test_codec import decoded_payloads
from tests.runtime.test_codec_server import TOKEN, serving

STEP = b'{"agent":"#2soVS-qa_-UDqlANERH64BEK","context":{"flow":"hello","run_id":"hello-1a2b"},"input":{"name":"Ada"}}'
# A step's input written by the first version of the format: if the dictionary changed, this
# (and every history holding such payloads) would no longer read.
STEP_V1 = "wymRi2S/UXF+WLBuYWK8bqhLYY6jn2uQh5mJk6s3VndlpObk5CM7Diyga5holKSE7DJoMDmmJAIDFgA="


def json_payload(data: bytes) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=data)


def test_the_setting(monkeypatch):
    for raw, expected in (
        ("", None),
        ("off", None),
        ("deflate", 64),
        ("on", 64),
        ("deflate:256", 256),
        ("DEFLATE:0", 0),
    ):
        monkeypatch.setenv(compression.ENV, raw)
        assert compression.min_bytes_setting() == expected, raw
    for raw, message in (("gzip", "use deflate, deflate:MIN_BYTES or off"), ("deflate:big", "whole number of bytes")):
        monkeypatch.setenv(compression.ENV, raw)
        with pytest.raises(InputError, match=message):
            compression.min_bytes_setting()


def test_large_payloads_shrink_and_read_back_small_and_foreign_ones_stay():
    request = RunRequest.model_validate(
        {
            "flow": {"name": "f", "steps": [{"name": f"s{i}", "agent": f"a{i}"} for i in range(5)]},
            "agents": {f"a{i}": {"name": f"a{i}", "kind": "llm", "model": "openai:m"} for i in range(5)},
            "input": {"text": "an invoice " * 20},
        }
    )
    big = json_payload(request.model_dump_json().encode())
    packed = deflate(big, 64)
    assert packed.metadata["encoding"] == ENCODING and packed.ByteSize() < big.ByteSize() / 3
    assert inflate(packed) == big
    step = json_payload(STEP)
    assert deflate(step, 64).ByteSize() < step.ByteSize() * 0.8  # the dictionary shrinks even a step's input
    small = json_payload(b'"Ada"')
    assert deflate(small, 64) is small and deflate(small, 0) is small  # not smaller: kept as it is
    noise = json_payload(os.urandom(300))  # incompressible
    assert deflate(noise, 0) is noise
    sealed = Payload(metadata={"encoding": b"binary/encrypted"}, data=os.urandom(400))
    assert deflate(sealed, 0) is sealed and inflate(sealed) is sealed
    assert inflate(big) is big  # written before compression was on: read as it is


def test_the_dictionary_is_part_of_the_format():
    assert inflate(Payload(metadata={"encoding": ENCODING}, data=base64.b64decode(STEP_V1))) == json_payload(STEP)
    assert hashlib.sha256(compression.DICTIONARY_1).hexdigest().startswith("a8f4fa4c")


def test_inflating_is_bounded_and_corrupt_data_is_one_error(monkeypatch):
    bomb = deflate(json_payload(b"[" + b"0," * 50_000 + b"0]"), 0)
    assert bomb.ByteSize() < 1_000
    monkeypatch.setattr(compression, "MAX_INFLATED", 10_000)
    with pytest.raises(CompressionError, match="inflates past"):
        inflate(bomb)
    with pytest.raises(CompressionError, match="does not inflate"):
        inflate(Payload(metadata={"encoding": ENCODING}, data=b"\xff\xfe not deflate"))


def test_every_converter_reads_compressed_payloads_only_the_configured_one_writes_them():
    reader = compression.converter_class(None)()
    writer = compression.converter_class(64)()
    floor = compression.converter_class(10_000)()
    request = RunRequest.model_validate(
        {"flow": {"name": "f", "steps": [{"agent": "a"}]}, "agents": {}, "input": {"t": "x" * 500}}
    )
    [written] = writer.to_payloads([request])
    assert written.metadata["encoding"] == ENCODING
    assert reader.from_payloads([written], [RunRequest]) == [request]
    [as_is] = reader.to_payloads([request])
    assert as_is.metadata["encoding"] == b"json/plain"
    [under_floor] = floor.to_payloads([request])
    assert under_floor.metadata["encoding"] == b"json/plain"


def start_payload(history) -> Payload:
    return history.events[0].workflow_execution_started_event_attributes.input.payloads[0]


async def test_compressed_runs_read_back_everywhere_with_compression_off_again(dev_server, task_queue, tmp_path):
    marker = "Pangolinharp " + os.urandom(4).hex()
    name = f"{marker} " + "of the accounts department, " * 12
    base = dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue)
    on = {**base, compression.ENV: "deflate"}
    runs = {}
    for label, env in (("compressed", on), ("plain", base)):
        done = run_cli(["run", "hello", "--input", json.dumps({"name": name}), "--wait", "--json"], env)
        assert done.returncode == 0, done.stderr
        runs[label] = json.loads(done.stdout)["run_id"]
    stored = {
        label: await dev_server.client.get_workflow_handle(run_id).fetch_history() for label, run_id in runs.items()
    }
    assert start_payload(stored["compressed"]).metadata["encoding"] == ENCODING
    assert start_payload(stored["plain"]).metadata["encoding"] == b"json/plain"
    size = {label: sum(e.ByteSize() for e in h.events) for label, h in stored.items()}
    assert size["compressed"] < 0.8 * size["plain"], size

    run_id = runs["compressed"]
    for args in (["status", run_id, "--json"], ["result", run_id, "--json"]):
        shown = run_cli(args, base)  # compression off in this process: still read
        assert shown.returncode == 0 and marker in shown.stdout, shown.stderr
    exported = tmp_path / "history.json"
    assert run_cli(["history", run_id, "--out", str(exported)], base).returncode == 0
    assert marker not in exported.read_text()  # exported as stored
    replayed = run_cli(["replay", str(exported), "--json"], base)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    plain = tmp_path / "plain.json"
    assert run_cli(["history", run_id, "--decode", "--out", str(plain)], base).returncode == 0
    assert marker in decoded_payloads(json.loads(plain.read_text()))

    # the Web UI and `temporal workflow show` read them through the codec endpoint, no key needed
    temporal = str(Path(sys.executable).parent / "temporal")
    show = [temporal, "workflow", "show", "-w", run_id, "-o", "json", "--address", dev_server.info.address]
    raw = subprocess.run(show, capture_output=True, text=True, timeout=60)
    assert raw.returncode == 0 and marker not in decoded_payloads(json.loads(raw.stdout))
    assert ENCODING.decode() in decoded_payloads(json.loads(raw.stdout))
    with serving({**base, "ENSEMBLE_CODEC_TOKEN": TOKEN}) as url:
        decoded = subprocess.run(
            [*show, "--codec-endpoint", url, "--codec-auth", f"Bearer {TOKEN}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert decoded.returncode == 0, decoded.stderr
    assert marker in decoded_payloads(json.loads(decoded.stdout))


async def test_compressed_then_encrypted(dev_server, task_queue):
    key = codec.new_key()
    marker = "Narwhalbanjo " + os.urandom(4).hex()
    env = dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue, ENSEMBLE_CODEC_KEYS=f"a:{key}", **{compression.ENV: "deflate"})
    done = run_cli(["run", "hello", "--input", json.dumps({"name": marker + " x" * 200}), "--wait", "--json"], env)
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    sealed = start_payload(await dev_server.client.get_workflow_handle(run_id).fetch_history())
    assert sealed.metadata["encoding"] == b"binary/encrypted"
    opened = codec.AesGcmCodec(codec.parse_keys(f"a:{key}", "t")).decode_one(sealed)
    assert opened.metadata["encoding"] == ENCODING  # compressed first, then encrypted
    assert marker.encode() in inflate(opened).data
    shown = run_cli(["result", run_id, "--json"], {**env, compression.ENV: "off"})
    assert shown.returncode == 0 and marker in shown.stdout, shown.stderr


def test_a_malformed_setting_is_one_line(dev_server, task_queue):
    env = dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue, **{compression.ENV: "brotli"})
    for script, args in (("starter.py", ["run", "hello", "--input", '{"name": "Ada"}']), ("worker.py", [])):
        done = run_cli(args, env, script=script, timeout=60)
        assert done.returncode == 2, (script, done.stdout, done.stderr)
        assert done.stderr.strip().splitlines() == [
            f"error: {compression.ENV}='brotli': use deflate, deflate:MIN_BYTES or off"
        ], done.stderr
