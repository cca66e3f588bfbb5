"""Cleaning the payload store: deleting the values no run refers to any more.

Values over the payload threshold go to the store by reference (ensemble/runtime/payloads.py) and
are never deleted when a run ends: a history may be read, replayed or exported later. Once the
server has deleted a run's history (its namespace's retention, or `temporal workflow delete` for an
erasure request), the values only that run referred to are garbage. `prune` finds them by marking
and sweeping:

1. mark: every execution the namespace still holds (open or closed, listed by visibility), its
   history's references, and for open runs the pending activities' heartbeat details (a value
   there is not in the history yet); every schedule's action; every namespace that ever wrote to
   the store is walked (the store records them), so one namespace's prune never deletes another's
   values;
2. sweep: a file that nothing marked and that was neither written nor used again within the grace
   period (`--older-than`, default one day, at least a minute) is deleted. The grace covers values
   written for a run that has not started yet, or an activity result on its way to the server.

Anything the walk cannot read (a history that fails to load for a reason other than the run being
deleted meanwhile, a reference it cannot parse) stops the prune before it deletes anything.
Only file stores (the embedded default, `file:PATH`) are pruned here; an object store expires its
values with its own lifecycle rules.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import Message
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.converter import ExternalStorage
from temporalio.service import RPCError, RPCStatusCode

from ensemble.runtime.payloads import NAMESPACES_DIR, FileStorageDriver, stored_values
from ensemble.spec.errors import EnsembleError, InputError

MIN_GRACE_S = 60.0
DEFAULT_GRACE_S = 24 * 3600.0
CONCURRENCY = 16
_DIGEST = re.compile(r"[0-9a-f]{64}")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_grace(text: str) -> float:
    """`90s`, `10m`, `2h`, `1d` (or plain seconds) as seconds; at least MIN_GRACE_S."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text or "")
    if match is None:
        raise InputError(f"--older-than {text!r}: use a duration such as 90s, 10m, 2h or 1d")
    seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds < MIN_GRACE_S:
        raise InputError(
            f"--older-than {text}: at least {MIN_GRACE_S:g}s (a value is written a moment before the run or "
            "the step that refers to it is recorded)"
        )
    return seconds


def file_driver(storage: ExternalStorage | None) -> FileStorageDriver:
    """The file store to prune, or one line saying why there is none."""
    if storage is None:
        raise InputError("no payload store is configured (ENSEMBLE_PAYLOAD_STORE): there is nothing to prune")
    files = [d for d in storage.drivers if isinstance(d, FileStorageDriver)]
    if not files:
        names = ", ".join(d.name() for d in storage.drivers)
        raise InputError(
            f"the configured payload store ({names}) is not a file store: expire its values with the store's own "
            "lifecycle rules (docs/operations.md)"
        )
    return files[0]


@dataclass
class Marked:
    """What the namespaces still refer to in a store driver."""

    digests: set[str] = field(default_factory=set)
    executions: int = 0
    schedules: int = 0


@dataclass
class Swept:
    root: str
    namespaces: list[str]
    executions: int
    schedules: int
    referenced: int
    kept: int = 0
    kept_bytes: int = 0
    recent: int = 0
    recent_bytes: int = 0
    deleted: int = 0
    deleted_bytes: int = 0
    stale_temp: int = 0
    dry_run: bool = False

    def line(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        return (
            f"{self.root}: {verb} {self.deleted} value(s), {_mb(self.deleted_bytes)}, that no run refers to; kept "
            f"{self.kept} referenced by {self.executions} execution(s) and {self.schedules} schedule(s) in "
            f"{', '.join(self.namespaces)} ({_mb(self.kept_bytes)}) and {self.recent} written or used within the "
            f"grace period ({_mb(self.recent_bytes)})"
        )


def _mb(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


def _claims(messages: Iterable[Message], driver: str, into: set[str], source: str) -> None:
    try:
        found = stored_values(messages)
    except InputError as err:
        raise EnsembleError(f"{source}: {err}; nothing deleted") from None
    for _, name, claim in found:
        if name == driver:
            digest = claim.get("sha256", "")
            if not _DIGEST.fullmatch(digest):
                raise EnsembleError(f"{source}: a reference names no stored value ({digest[:16]!r}); nothing deleted")
            into.add(digest)


async def mark(client: Client, driver: str) -> Marked:
    """Every value of store driver `driver` that the client's namespace still refers to."""
    marked = Marked()
    try:
        runs = [(e.id, e.run_id, e.status) async for e in client.list_workflows()]
        schedules = [listed.id async for listed in await client.list_schedules()]
    except RPCError as err:
        raise EnsembleError(
            f"namespace '{client.namespace}': cannot list its runs ({err.message}); nothing deleted"
        ) from None
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(workflow_id: str, run_id: str, status: WorkflowExecutionStatus | None) -> None:
        source = f"run {workflow_id} ({run_id})"
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        async with gate:
            try:
                events = [event async for event in handle.fetch_history_events()]
                messages: list[Message] = list(events)
                if status == WorkflowExecutionStatus.RUNNING:
                    messages.append((await handle.describe()).raw_description)
            except RPCError as err:
                if err.status == RPCStatusCode.NOT_FOUND:
                    return  # deleted since it was listed: its values are garbage too
                raise EnsembleError(f"{source}: cannot read its history ({err.message}); nothing deleted") from None
        _claims(messages, driver, marked.digests, source)

    await asyncio.gather(*(one(*run) for run in runs))
    marked.executions = len(runs)
    for schedule_id in schedules:
        try:
            description = await client.get_schedule_handle(schedule_id).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                continue  # deleted since it was listed
            raise EnsembleError(f"schedule {schedule_id}: cannot read it ({err.message}); nothing deleted") from None
        _claims([description.raw_description], driver, marked.digests, f"schedule {schedule_id}")
        marked.schedules += 1
    return marked


async def prune(
    client: Client,
    storage: ExternalStorage | None,
    *,
    grace_s: float = DEFAULT_GRACE_S,
    namespaces: list[str] | None = None,
    dry_run: bool = False,
) -> Swept:
    """Delete the values of the configured file store that no execution or schedule of
    `namespaces` (default: the client's) refers to and that are older than `grace_s`."""
    driver = file_driver(storage)
    walked = sorted(set(namespaces or [client.namespace]))
    missing = sorted(driver.namespaces() - set(walked))
    if missing:
        raise InputError(
            f"the payload store {driver.root} also holds values written in namespace(s) {', '.join(missing)}: name "
            f"every namespace that uses it (--namespace {' --namespace '.join([*walked, *missing])}); nothing deleted"
        )
    started = time.time()
    total = Marked()
    for namespace in walked:
        on = client
        if namespace != client.namespace:
            config = client.config()
            config["namespace"] = namespace
            on = Client(**config)
        got = await mark(on, driver.name())
        total.digests |= got.digests
        total.executions += got.executions
        total.schedules += got.schedules
    swept = Swept(str(driver.root), walked, total.executions, total.schedules, len(total.digests), dry_run=dry_run)
    await asyncio.to_thread(_sweep, driver.root, total.digests, started - grace_s, swept)
    return swept


def _sweep(root: Path, keep: set[str], cutoff: float, swept: Swept) -> None:
    if not root.is_dir():
        return
    for folder in sorted(root.iterdir()):
        if folder.name == NAMESPACES_DIR or not folder.is_dir():
            continue
        for path in list(folder.iterdir()):
            try:
                info = path.stat()
            except FileNotFoundError:
                continue
            if path.name.startswith(".") and path.name.endswith((".tmp", ".pruning")):  # never finished
                if info.st_mtime < cutoff and not swept.dry_run:
                    path.unlink(missing_ok=True)
                    swept.stale_temp += 1
                continue
            if not _DIGEST.fullmatch(path.name):
                continue
            if path.name in keep:
                swept.kept += 1
                swept.kept_bytes += info.st_size
            elif info.st_mtime >= cutoff:
                swept.recent += 1
                swept.recent_bytes += info.st_size
            else:
                swept.deleted += 1
                swept.deleted_bytes += info.st_size
                if not swept.dry_run:
                    _delete_if_unused(path, cutoff)


def _delete_if_unused(path: Path, cutoff: float) -> None:
    """Delete `path` unless it is used again meanwhile. It is first renamed away (atomically): a
    writer of the same value that finds it gone writes it again, and one that refreshed its time
    before the rename shows in the renamed file's time, which puts it back."""
    doomed = path.with_name(f".{path.name}.pruning")
    try:
        os.replace(path, doomed)
    except FileNotFoundError:
        return
    if doomed.stat().st_mtime >= cutoff and not path.exists():
        os.replace(doomed, path)  # used again as it was being deleted
    else:
        doomed.unlink(missing_ok=True)
