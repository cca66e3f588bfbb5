"""The embedded Temporal server's state directory, read from this machine: where it is, the
server it records (`server.json`), whether that server is up, and what is wrong with it.

State directory: `$ENSEMBLE_HOME`, default `./.ensemble` (owner-only: 0700, its files 0600). It
holds `temporal.db` (the SQLite database), `server.json` (pid and ports of the server; the ports
stay recorded after it stops, so a restarted server comes back where the workers look) and
`server.log`. `problem()` says what is wrong with a running server (its database deleted, the disk
full, no answer to GetSystemInfo); `local_problem()` is the cheap part every command that connects
checks first, so a broken state directory is one line, not a hang.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"


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


def ensure_state_dir() -> Path:
    home = state_dir()
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if home.stat().st_mode & 0o077:
            home.chmod(0o700)
    return home


def write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def port_open(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


_HANDED: set[int] = set()  # ports free_port() gave this process: never the same one twice


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # no SO_REUSEADDR: a TIME_WAIT counts as taken
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port nothing is bound to, below the kernel's ephemeral range. A port the kernel hands out for
    bind(0) lies in the range it also takes the local end of every outgoing connection from: between
    choosing such a port and the server binding it (seconds, for the Temporal server), any connection
    on this machine may take it, and the server exits with `bind: address already in use`. Below the
    range only a listener can take it."""
    low, _ = _ephemeral_range()
    floor = 10000  # above the well-known and most registered ports (7233, 8233, ...)
    if low - floor >= 1000:
        rng = random.SystemRandom()
        for _ in range(200):
            port = rng.randrange(floor, low)
            if port not in _HANDED and _bindable(port):
                _HANDED.add(port)
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # a narrow range: the kernel's choice
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    _HANDED.add(port)
    return port


def pid_alive(pid: int) -> bool:
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


def exited(pid: int) -> bool:
    """The process is gone or a zombie: its sockets are closed. `pid_alive` turns false earlier, once
    an exiting process has released its memory (its cmdline reads empty) but not yet its files."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2 :][:1] in ("Z", "X")


def read_info() -> ServerInfo | None:
    path = state_dir() / "server.json"
    try:
        return ServerInfo(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def running() -> ServerInfo | None:
    """The embedded server of this state directory, if it is up."""
    info = read_info()
    if info and pid_alive(info.pid) and port_open(info.port):
        return info
    return None


def last_error(info: ServerInfo) -> str:
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
    if info is None or info.pid <= 0 or pid_alive(info.pid):
        return None
    why = last_error(info)
    disk = disk_problem(state_dir())
    return f"the embedded Temporal server (pid {info.pid}) died: {disk or why}; see {info.log}"


def state_problem() -> str | None:
    """While a command waits on a run: one line when this state directory's server died or its
    state broke (cheap: no network), else None."""
    gone = died()
    if gone:
        return gone
    info = running()
    return local_problem(info) if info else None


def disk_problem(home: Path) -> str | None:
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
    return disk_problem(Path(info.db).parent)


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
