"""The benchmark's own Temporal server and worker processes.

The server is the embedded one, started with exactly the command line Ensemble uses
(`ensemble.runtime.server.command`), in a temporary state directory on free ports, optionally with
dynamic-config values added or dropped to measure what each setting does.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.converter import DataConverter

from ensemble.runtime import server as embedded

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class BenchServer:
    home: Path
    add: dict[str, Any] = field(default_factory=dict)
    drop: tuple[str, ...] = ()
    proc: subprocess.Popen | None = None
    info: embedded.ServerInfo | None = None

    def command(self) -> list[str]:
        cmd = embedded.command(self.info)
        out: list[str] = []
        i = 0
        while i < len(cmd):  # drop the dynamic-config values asked for
            if cmd[i] == "--dynamic-config-value" and cmd[i + 1].split("=", 1)[0] in self.drop:
                i += 2
                continue
            out.append(cmd[i])
            i += 1
        for key, value in self.add.items():
            out += ["--dynamic-config-value", f"{key}={json.dumps(value)}"]
        return out

    def settings(self) -> dict[str, Any]:
        """The pragmas and dynamic config this server runs with."""
        cmd = self.command()
        pick = lambda flag: [cmd[i + 1] for i, part in enumerate(cmd) if part == flag]  # noqa: E731
        return {"sqlite_pragmas": pick("--sqlite-pragma"), "dynamic_config": pick("--dynamic-config-value")}

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def address(self) -> str:
        assert self.info is not None
        return self.info.address

    def start(self, timeout_s: float = 60) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        port = embedded.free_port()
        self.info = embedded.ServerInfo(
            pid=0,
            port=port,
            ui_port=embedded.free_port(),
            db=str(self.home / "temporal.db"),
            log=str(self.home / "server.log"),
        )
        with open(self.info.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self.info.pid = self.proc.pid
        deadline = time.monotonic() + timeout_s
        while not embedded.port_open(port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the benchmark's Temporal server did not start; see {self.info.log}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@dataclass
class WorkerProcess:
    """One `python -m bench.worker` subprocess."""

    address: str
    task_queue: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), **self.env}
        # Its stderr goes to a file until it is ready (then it points stderr at /dev/null itself), so
        # a worker that does not start says why.
        with tempfile.TemporaryFile() as startup:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.worker", "--address", self.address, "--task-queue", self.task_queue,
                 "--kind", self.kind, "--options", json.dumps(self.options)],
                cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=startup, text=True,
            )  # fmt: skip
            deadline = time.monotonic() + timeout_s
            line = self.proc.stdout.readline() if self.proc.stdout else ""
            if line.strip() != "ready" or time.monotonic() > deadline:
                self.stop()
                startup.seek(0)
                said = [x for x in startup.read().decode(errors="replace").splitlines() if x.strip()]
                raise RuntimeError(
                    f"benchmark worker {self.kind} {self.options} did not start: {said[-1] if said else 'no output'}"
                )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_mb(self) -> dict[str, float]:
        return rss_mb(self.pid)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()  # type: ignore[union-attr]
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def rss_mb(pid: int) -> dict[str, float]:
    """Resident memory now (VmRSS) and at its peak (VmHWM) of a process, in MB."""
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return {"rss_mb": out.get("VmRSS", 0.0), "peak_mb": out.get("VmHWM", 0.0)}


def ensemble_converter() -> DataConverter:
    """Ensemble's payload converter as the environment sets it (ENSEMBLE_PAYLOAD_COMPRESSION),
    without a payload store or codec: what the Ensemble system's worker and starts use."""
    from ensemble.runtime import compression

    return DataConverter(payload_converter_class=compression.converter_class(compression.min_bytes_setting()))
