"""Closed by default: a worker's metrics endpoint binds 127.0.0.1 unless `--metrics-host` says
otherwise (docs/security.md, Connections)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from ensemble.runtime import server
from tests.conftest import ROOT


def _outward_address() -> str | None:
    """An address of this host that is not loopback (the one a default route would use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.123", 9))  # no packet is sent: this only picks a source address
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def _open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def test_the_metrics_endpoint_listens_on_loopback_only_by_default(dev_server, task_queue):
    outward = _outward_address()
    if outward is None:
        pytest.skip("this host has no non-loopback IPv4 address to check against")
    port = server.free_port()
    worker = subprocess.Popen(
        [sys.executable, "worker.py", "--metrics-port", str(port)],
        cwd=ROOT,
        env=dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not _open("127.0.0.1", port):
            assert worker.poll() is None and time.monotonic() < deadline, (
                worker.stderr.read() if worker.poll() is not None else "no port"
            )
            time.sleep(0.1)
        assert not _open(outward, port), f"metrics reachable on {outward}:{port}"
    finally:
        worker.terminate()
        worker.wait(timeout=20)
