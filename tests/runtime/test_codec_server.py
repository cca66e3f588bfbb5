"""The codec endpoint (`starter.py codec-server`): the `temporal` CLI decodes an encrypted run
through it with the bearer token, nothing without; CORS only for the Web UI's origin."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ensemble.runtime import codec, server
from tests.conftest import ROOT, run_cli
from tests.runtime.test_codec import decoded_payloads

KEY = codec.new_key()
TOKEN = "tok_" + os.urandom(16).hex()


@contextlib.contextmanager
def serving(env: dict[str, str]) -> Iterator[str]:
    """`starter.py codec-server` on a free port with `env`; yields its URL."""
    port = server.free_port()
    proc = subprocess.Popen(
        [sys.executable, "starter.py", "codec-server", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not server.port_open(port):
            assert proc.poll() is None and time.monotonic() < deadline, (
                proc.stderr.read() if proc.poll() is not None else "no port"
            )
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def endpoint(dev_server, task_queue):
    env = dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue, ENSEMBLE_CODEC_KEYS=f"a:{KEY}", ENSEMBLE_CODEC_TOKEN=TOKEN)
    with serving(env) as url:
        yield url, env


async def test_the_temporal_cli_decodes_through_the_endpoint_with_the_token(dev_server, endpoint):
    url, env = endpoint
    marker = "Wombatlantern " + os.urandom(4).hex()
    done = run_cli(["run", "hello", "--input", json.dumps({"name": marker}), "--wait", "--json"], env)
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    temporal = str(Path(sys.executable).parent / "temporal")
    base = [temporal, "workflow", "show", "-w", run_id, "-o", "json", "--address", dev_server.info.address]

    plain = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert plain.returncode == 0 and marker not in decoded_payloads(json.loads(plain.stdout))
    decoded = subprocess.run(
        [*base, "--codec-endpoint", url, "--codec-auth", f"Bearer {TOKEN}"], capture_output=True, text=True, timeout=60
    )
    assert decoded.returncode == 0, decoded.stderr
    assert marker in decoded_payloads(json.loads(decoded.stdout))
    wrong = subprocess.run(
        [*base, "--codec-endpoint", url, "--codec-auth", "Bearer nope"], capture_output=True, text=True, timeout=60
    )
    assert marker not in wrong.stdout + decoded_payloads(json.loads(wrong.stdout) if wrong.returncode == 0 else {})


async def test_the_endpoint_refuses_requests_without_the_token_and_other_origins(dev_server, endpoint):
    url, _ = endpoint
    async with httpx.AsyncClient() as http:
        sealed = await http.post(
            f"{url}/encode",
            json={"payloads": [{"metadata": {"encoding": "anNvbi9wbGFpbg=="}, "data": "IngiCg=="}]},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert sealed.status_code == 200, sealed.text
        [payload] = sealed.json()["payloads"]
        assert payload["metadata"]["encoding"] == "YmluYXJ5L2VuY3J5cHRlZA=="  # binary/encrypted
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            refused = await http.post(f"{url}/decode", json={"payloads": [payload]}, headers=headers)
            assert refused.status_code == 401
        opened = await http.post(
            f"{url}/decode", json={"payloads": [payload]}, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert opened.json()["payloads"][0]["data"] == "IngiCg=="
        ui = dev_server.info.ui_url
        preflight = {
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        }
        ok = await http.options(f"{url}/decode", headers={"Origin": ui, **preflight})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ui
        evil = await http.options(f"{url}/decode", headers={"Origin": "http://evil.example", **preflight})
        assert evil.status_code == 400 and "access-control-allow-origin" not in evil.headers


def test_the_embedded_server_gets_the_ui_codec_endpoint_when_encryption_is_on(monkeypatch, tmp_path):
    info = server.ServerInfo(pid=0, port=7233, ui_port=8233, db=str(tmp_path / "t.db"), log=str(tmp_path / "log"))
    monkeypatch.delenv(codec.KEYS_ENV, raising=False)
    monkeypatch.delenv(codec.KEY_FILE_ENV, raising=False)
    assert "--ui-codec-endpoint" not in server.command(info)
    monkeypatch.setenv(codec.KEYS_ENV, f"a:{KEY}")
    monkeypatch.setenv("ENSEMBLE_CODEC_PORT", "9911")
    cmd = server.command(info)
    assert cmd[cmd.index("--ui-codec-endpoint") + 1] == "http://127.0.0.1:9911"


def test_codec_server_refuses_to_start_without_a_token(dev_server):
    env = dev_server.env(ENSEMBLE_CODEC_KEYS=f"a:{KEY}")
    result = run_cli(["codec-server", "--port", str(server.free_port())], env, timeout=30)
    assert result.returncode == 2
    assert (
        result.stderr.startswith("error: the codec endpoint needs a bearer token")
        and len(result.stderr.strip().splitlines()) == 1
    )
