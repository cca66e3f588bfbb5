"""`starter.py keys token USER` and `starter.py serve` as a user types them."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import jwt

from ensemble.runtime import server
from tests.conftest import ROOT, run_cli


def test_keys_token_prints_a_short_lived_bearer_token(dev_server):
    env = dev_server.env()
    done = run_cli(["keys", "token", "alice", "--ttl", "120"], env)
    assert done.returncode == 0, done.stderr
    claims = jwt.decode(done.stdout.strip(), options={"verify_signature": False})
    assert (
        claims["sub"] == "alice" and claims["aud"] == "ensemble-service" and 100 <= claims["exp"] - claims["iat"] <= 120
    )
    missing = run_cli(["keys", "token", "nobody-here"], env)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "keys init nobody-here" in missing.stderr


def test_serve_starts_the_service(dev_server):
    port = server.free_port()
    env = dev_server.env(TEMPORAL_ADDRESS=dev_server.info.address)
    proc = subprocess.Popen(
        [sys.executable, "starter.py", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, (
                    proc.stdout.read() if proc.poll() is not None else "timeout"
                )
                time.sleep(0.2)
        assert health.json() == {"status": "ok"}
        token = run_cli(["keys", "token", "alice"], env).stdout.strip()
        me = httpx.get(f"http://127.0.0.1:{port}/api/whoami", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200 and me.json()["subject"] == "alice"
        assert httpx.get(f"http://127.0.0.1:{port}/openapi.json").json()["openapi"].startswith("3.1")
    finally:
        proc.terminate()
        proc.wait(30)
