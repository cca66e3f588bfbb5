"""Flow versions recorded in Temporal, so a run can name its flow's version instead of carrying it
(`ensemble.spec.versions`; docs/flows.md, "Flow versions").

A version's record is a workflow of id `ensemble-flow-version-<digest>` (type `EnsembleFlowVersion`)
whose input is the version: the flow as a run's start event would record it. It is started with a
start delay of a century on a task queue no worker polls, so it never runs and never ends: no
worker keeps it, and the namespace's retention, which deletes closed runs, does not touch it. A
client records the version before it starts a run naming it (once per version and namespace in a
process); starting an existing record is a no-op (id conflict policy USE_EXISTING), and a record
someone terminated is written again by the next run's start.

Whoever reads a run that names a version it does not know reads the record: a worker (`Watch`:
the workflow task that met the reference waits for the record's fetch, or fails once and its retry
finds the version), the readers of
run histories (`resolve`), and `history --out`, which writes the version back into the exported
history so that a file stays enough on its own (`inline`). A record's body is checked against its
digest before it is kept, so a record written by anyone else cannot change what a run reads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from ensemble.spec import versions
from ensemble.spec.errors import EnsembleError, InputError

ENV = "ENSEMBLE_FLOW_REFS"
RECORD_TYPE = "EnsembleFlowVersion"
RECORD_QUEUE = "ensemble-flow-versions"  # no worker polls it: a record never runs
RECORD_DELAY = timedelta(days=36525)

# (server, namespace) -> version -> when this process last made sure of its record: a record
# someone terminated is written again within RECORD_REFRESH_S by a long-lived client too.
_recorded: dict[tuple[str, str], dict[str, float]] = {}
_refused: dict[tuple[str, str], dict[str, float]] = {}  # the same, for records the server refused
RECORD_REFRESH_S = 3600.0


def enabled() -> bool:
    """Whether runs this process starts name their flow's version (ENSEMBLE_FLOW_REFS)."""
    value = (os.environ.get(ENV) or "on").strip().lower()
    if value not in ("on", "off"):
        raise InputError(f"{ENV}={value!r}: use on or off")
    return value == "on"


def _where(client: Client) -> tuple[str, str]:
    return (client.service_client.config.target_host, client.namespace)


async def record(client: Client, body: dict[str, Any]) -> str | None:
    """Record a flow version in the client's namespace (once per process); its digest, or None
    where the server refused the record (asked again after RECORD_REFRESH_S, not at every start)."""
    found = versions.remember(body)
    done = _recorded.setdefault(_where(client), {})
    refused = _refused.setdefault(_where(client), {})
    if time.monotonic() - done.get(found, -RECORD_REFRESH_S) < RECORD_REFRESH_S:
        return found
    if time.monotonic() - refused.get(found, -RECORD_REFRESH_S) < RECORD_REFRESH_S:
        return None
    name = body["flow"].get("name", "") if isinstance(body.get("flow"), dict) else ""
    try:
        await client.start_workflow(
            RECORD_TYPE,
            {"name": name, "version": found, "body": body},
            id=versions.RECORD_PREFIX + found,
            task_queue=RECORD_QUEUE,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            start_delay=RECORD_DELAY,
            static_summary=f"flow version {versions.ref(name, found)}"[:200],
        )
    except RPCError:
        refused[found] = time.monotonic()
        return None
    done[found] = time.monotonic()
    return found


async def fetch(client: Client, ref: str) -> bool:
    """Read a version's record into this process; whether the version is known now."""
    _, found = versions.parse_ref(ref)
    if versions.known(found):
        return True
    handle = client.get_workflow_handle(versions.RECORD_PREFIX + found)
    try:
        async for event in handle.fetch_history_events(page_size=1):
            payloads = event.workflow_execution_started_event_attributes.input.payloads
            values = await client.data_converter.decode(list(payloads))
            break
        else:
            return False
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    body = values[0].get("body") if values and isinstance(values[0], dict) else None
    if not isinstance(body, dict) or versions.digest(body) != found:
        return False  # not the version its id names: never kept
    versions.remember(body)
    return True


async def resolve(client: Client | None, data: Any) -> Any:
    """A recorded run request (decoded JSON) with its flow version's body in place, read from the
    version's record where this process does not know it; as it is where it names none, or where
    the version cannot be found (reading it then says which)."""
    if not isinstance(data, dict) or versions.REF not in data:
        return data
    try:
        _, found = versions.parse_ref(data[versions.REF])
    except ValueError:
        return data
    if not versions.known(found) and client is not None:
        try:
            await fetch(client, data[versions.REF])
        except Exception:  # noqa: BLE001 - unreadable here (no key, no server): reading it says which version
            pass
    if not versions.known(found):
        _load_deployed()
    try:
        return versions.read(data)
    except versions.VersionUnknown:
        return data


def _load_deployed() -> None:
    """The flows this process is deployed with, loaded as a worker loads them, so their versions
    are known (a reader of an exported history, which has no record to read)."""
    from ensemble.authoring.deploy import load_worker_flows

    try:
        load_worker_flows()
    except EnsembleError:
        pass  # a flow file that does not load names no version anything could read


class Watch:
    """A worker's eye on the versions its runs name: a reference its workflow code cannot read
    (it does no I/O) is fetched on the worker's event loop while the workflow task waits for it
    (up to WAIT_S, well within the SDK's 2-second deadlock detection), so the task goes on with the
    version. A fetch that takes longer fails that workflow task once, and its retry reads it."""

    WAIT_S = 1.0

    def __init__(self, client: Client) -> None:
        self.client = client
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._lock = threading.Lock()
        self._fetching: dict[str, concurrent.futures.Future[None]] = {}
        self._stop: Any = None

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._stop = versions.on_miss(self._missed)

    def stop(self) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None

    async def _fetch_once(self, ref: str) -> None:
        try:
            await fetch(self.client, ref)
        except Exception:  # noqa: BLE001 - the workflow task fails and says which version
            pass
        finally:
            with self._lock:
                self._fetching.pop(ref, None)

    def _missed(self, ref: str) -> None:
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        with self._lock:  # one fetch per version, however many workflow tasks meet it at once
            pending = self._fetching.get(ref)
            if pending is None:
                pending = asyncio.run_coroutine_threadsafe(self._fetch_once(ref), loop)
                self._fetching[ref] = pending
        if threading.get_ident() == self._loop_thread:
            return  # the loop itself cannot wait for its own fetch
        try:  # several workers in one process share the wait, so it stays within WAIT_S in all
            pending.result(timeout=self.WAIT_S / max(1, versions.listeners()))
        except Exception:  # noqa: BLE001 - not yet (or not at all): the task fails and is retried
            pass


async def inline(client: Client, events: Any) -> None:
    """Write a run's flow version back into its start event (an exported history: `history --out`),
    so the file is enough on its own to read and replay. The payload is written again with the
    client's converter (encrypted again where it was); a start event that names no version, or
    one this process cannot decode or find, is left as it is."""
    if not events:
        return
    started = events[0].workflow_execution_started_event_attributes
    payloads = list(started.input.payloads)
    if not payloads:
        return
    try:
        values = await client.data_converter.decode(payloads)
    except Exception:  # noqa: BLE001 - not readable here (no key): exported as stored
        return
    if not values or not isinstance(values[0], dict) or versions.REF not in values[0]:
        return
    data = await resolve(client, values[0])
    if versions.REF in data:
        return
    written = await client.data_converter.encode([data, *values[1:]])
    del started.input.payloads[:]
    started.input.payloads.extend(written)
