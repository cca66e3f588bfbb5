"""Building and running Ensemble workers.

A worker on the default queue runs the flow workflow and every agent. Agents that name their own
`task_queue` run on workers started for that queue (`python worker.py --task-queue Q
--activities-only`), which hold that agent's credentials or hardware. Scale out by starting more.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import structlog
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from ensemble.activities import approvals, egress, executors, faults, mcp, pool, threads
from ensemble.activities.executors import run_agent
from ensemble.authoring.deploy import load_worker_flows
from ensemble.authoring.tools import any_mcp_servers
from ensemble.runtime import codec, flow_versions, logs, server
from ensemble.runtime.health import HealthServer
from ensemble.runtime.sandbox import sandbox_runner
from ensemble.runtime.settings import positive_setting
from ensemble.runtime.slots import (
    DEFAULT_SLOTS,
    AdaptiveSlots,
    AdaptiveSlotSupplier,
    AutoSlots,
    activity_slots,
    retire,
)
from ensemble.spec.errors import InputError
from ensemble.workflows.chat import EnsembleChat
from ensemble.workflows.flow import EnsembleFlow

# Every workflow a worker runs; `starter.py replay` replays histories against these.
WORKFLOWS: tuple[type, ...] = (EnsembleFlow, EnsembleChat)


# Every subpackage of Ensemble but the workflows themselves.
SHARED_MODULES = ("ensemble.spec", "ensemble.logic", "ensemble.authoring", "ensemble.runtime", "ensemble.runs")
# The libraries the update validator checks decision proofs with (ensemble.logic.proofs): pure,
# imported once per process.
PROOF_MODULES = ("jwt", "cryptography")


def workflow_runner(converter: DataConverter | None = None) -> SandboxedWorkflowRunner:
    """Temporal's workflow sandbox, as ENSEMBLE_SANDBOX says. `trusted` (default) passes
    Ensemble's own workflow modules through the sandbox: they are imported once per process, not
    once per run, which saves about a fifth of the worker's CPU per short run and more than half
    the memory of a cached run. `strict` re-imports them for every run, so the sandbox also checks
    Ensemble's workflow code at run time (the test suite runs that way). Both use the sandbox's
    default restrictions, with its snippets compiled once (`ensemble.runtime.sandbox`); given the
    worker's data converter, it skips steps into a run that cannot change a payload (the same
    module); see docs/performance.md."""
    mode = (os.environ.get("ENSEMBLE_SANDBOX") or "trusted").strip().lower()
    if mode not in ("strict", "trusted"):
        raise InputError(f"ENSEMBLE_SANDBOX={mode!r} is not a sandbox mode: use trusted (the default) or strict")
    # Ensemble's shapes and pure logic are one copy per process in either mode, so a model built
    # inside a run is the same class the worker decodes and encodes.
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*SHARED_MODULES, *PROOF_MODULES)
    if mode == "trusted":
        restrictions = restrictions.with_passthrough_modules("ensemble.workflows")
    return sandbox_runner(restrictions, converter)


_LIVE: dict[int, int] = {}  # running Ensemble workers per event loop


class EnsembleWorker(Worker):
    """A Temporal worker that, when the last Ensemble worker of its event loop stops, also closes
    what its agents opened for the worker's lifetime (MCP sessions, so stdio MCP servers end)."""

    adaptive_slots: AdaptiveSlotSupplier | None = None  # shown by the health endpoint while the worker runs

    async def run(self) -> None:
        loop = id(asyncio.get_running_loop())
        _LIVE[loop] = _LIVE.get(loop, 0) + 1
        watch = flow_versions.Watch(self.client)  # flow versions its runs name and it does not know
        watch.start()
        try:
            await super().run()
        finally:
            watch.stop()
            if self.adaptive_slots is not None:
                retire(self.adaptive_slots)
            _LIVE[loop] -= 1
            if not _LIVE[loop]:
                del _LIVE[loop]
                await mcp.close_sessions()


def build_worker(
    client: Client,
    task_queue: str,
    *,
    workflows: bool = True,
    activities: bool = True,
    mcp_at_start: bool = True,
    **options: Any,
) -> EnsembleWorker:
    """A worker for flows and agents. `mcp_at_start=False` leaves the MCP SDK (a second of CPU) to
    the first MCP tool call: for a worker that serves one run in a command's process."""
    faults.check()  # a malformed ENSEMBLE_FAULTS stops the worker here, in one line
    logs.as_library()
    # Agents never call the Temporal server, its Web UI or the codec endpoint (docs/security.md, Egress).
    egress.protect(client.service_client.config.target_host)
    egress.protect(codec.endpoint())
    info = server.running() if not os.environ.get("TEMPORAL_ADDRESS") else None
    if info is not None:
        egress.protect(info.ui_url)
    gc_threshold()  # a malformed ENSEMBLE_GC_THRESHOLD stops the worker here, in one line
    load_worker_flows()  # only deployed code runs: what this worker may run, and the flow versions it knows
    if activities:
        executors.load()  # function, http and llm agents, before the first one runs
        pool.max_connections()  # as does a malformed ENSEMBLE_LLM_MAX_CONNECTIONS
        if mcp_at_start and any_mcp_servers():
            mcp.preload()
    options.setdefault("workflow_runner", workflow_runner(client.data_converter))
    if "max_cached_workflows" not in options:
        options["max_cached_workflows"] = workflow_cache()
    slots: int | AutoSlots | AdaptiveSlots | None = None
    limit = options.get("max_concurrent_activities") or DEFAULT_SLOTS
    if "tuner" not in options and "max_concurrent_activities" not in options:
        slots = activity_slots()  # ENSEMBLE_ACTIVITY_SLOTS (runtime/slots.py)
        limit = slots if isinstance(slots, int) else slots.maximum
    agent_pool = threads.configure(agent_threads(limit))  # for sync agents only
    adaptive = None
    if isinstance(slots, int):
        options["max_concurrent_activities"] = slots
    elif isinstance(slots, AdaptiveSlots):
        adaptive = AdaptiveSlotSupplier(slots, agent_pool)
        options["tuner"] = adaptive.tuner(options)
    elif slots is not None:
        options["tuner"] = slots.tuner(options)
    worker = EnsembleWorker(
        client,
        task_queue=task_queue,
        workflows=list(WORKFLOWS) if workflows else [],
        activities=[run_agent, *approvals.ACTIVITIES] if activities else [],
        **options,
    )
    worker.adaptive_slots = adaptive
    return worker


# Runs kept in memory between their workflow tasks by default: 2,000 in flight at once (the
# model-bound suite's largest point) stay cached, where the SDK's 1,000 made half of them replay
# their history at every task (docs/performance.md, "The workflow cache at 2,000 runs in flight").
DEFAULT_WORKFLOW_CACHE = 2000


def workflow_cache() -> int:
    """Runs a worker keeps in memory between their workflow tasks (ENSEMBLE_WORKFLOW_CACHE, default
    2,000; about 0.13 MB each). A run evicted from it replays its history at its next task; 0
    replays every task. Raise it when more runs than that are in flight at once
    (docs/performance.md)."""
    raw = os.environ.get("ENSEMBLE_WORKFLOW_CACHE", "").strip()
    if not raw:
        return DEFAULT_WORKFLOW_CACHE
    if not raw.isdigit():
        raise InputError(f"ENSEMBLE_WORKFLOW_CACHE={raw!r} is not a number of runs (0 or more)")
    return int(raw)


def agent_threads(slots: int) -> int:
    """Threads for sync agents (ENSEMBLE_AGENT_THREADS; default the activity slots, at most
    DEFAULT_THREADS): a thread each, a hung one held until it returns (activities/threads.py)."""
    return positive_setting("ENSEMBLE_AGENT_THREADS", min(slots, threads.DEFAULT_THREADS), "threads for sync agents")


STUCK_EXIT_CODE = 3  # every agent thread is stuck: exit so that a supervisor restarts the worker


GC_THRESHOLD_ENV = "ENSEMBLE_GC_THRESHOLD"
# Allocations between two collections of the youngest generation: Python's own 700 by default.
# Raising it (20,000) cut the collector's CPU with 1,000 model calls in flight (a `gc.callbacks`
# probe: 1.7 s instead of 5.0 at N = 1,000, L = 5 s), but in six rounds against Python's the runs
# per second were the same within the machine's noise, and parked runs held more memory
# (docs/performance.md, "The garbage collector"); it stays a setting.
PYTHON_GC_THRESHOLD = 700
DEFAULT_GC_THRESHOLD = PYTHON_GC_THRESHOLD


def gc_threshold() -> int:
    """ENSEMBLE_GC_THRESHOLD, else DEFAULT_GC_THRESHOLD; a malformed value is one line."""
    return positive_setting(GC_THRESHOLD_ENV, DEFAULT_GC_THRESHOLD, "allocations between young collections")


# Runs evicted from the workflow cache are garbage only a full collection frees (their objects are
# old and hold cycles), and with young collections every 20,000 allocations full collections come
# about 30 times more rarely: 10,000 parked runs (9,000 evicted) held 641 MB of worker memory
# instead of 270. So a worker whose threshold is raised above Python's also collects everything
# every FULL_COLLECTION_S seconds in which it made young collections (an idle worker makes none,
# and is left alone).
FULL_COLLECTION_S = 30.0


def _young_collections() -> int:
    return int(gc.get_stats()[0]["collections"])


async def collect_periodically(every_s: float = FULL_COLLECTION_S) -> None:
    """Run a full garbage collection every `every_s` seconds in which the process allocated enough
    to collect its young generation; runs until cancelled. Returns at once when the young
    collection threshold is Python's own (its full collections come often enough)."""
    if gc.get_threshold()[0] <= PYTHON_GC_THRESHOLD:
        return
    seen = _young_collections()
    while True:
        await asyncio.sleep(every_s)
        if _young_collections() != seen:
            gc.collect()
            seen = _young_collections()


def freeze_startup() -> None:
    """Move what the process holds once its worker is built (modules, flows, models, the agent
    registry: about 100,000 objects, never garbage) out of the garbage collector's reach, so its
    full collections, which stop the event loop, walk only what runs create (`gc.freeze`), and
    collect the young generation every `gc_threshold()` allocations (`serve` also runs
    `collect_periodically`). A worker process calls this once; a process that builds workers again
    and again (tests) need not."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(gc_threshold(), middle, oldest)


async def serve(
    client: Client,
    task_queue: str,
    *,
    workflows: bool = True,
    activities: bool = True,
    on_ready: Callable[[], None] | None = None,
    grace_s: float = 10.0,
    health_port: int | None = None,
    stuck_exit_s: float = 30.0,
    **options: Any,
) -> int:
    """Run a worker until SIGINT or SIGTERM, then drain it for at most `grace_s` seconds (agents
    still running then are cancelled; threads that will not end are left to the process exit).
    `on_ready` runs once it polls. With `health_port`, http://127.0.0.1:PORT/health answers 200
    while healthy, 503 while degraded. Returns 0 after a clean drain, 1 when the grace period ran
    out, STUCK_EXIT_CODE when every agent thread stayed stuck for `stuck_exit_s` seconds: the
    caller should then exit the process at once (`os._exit`), as stuck threads never end."""
    log = structlog.get_logger("ensemble.worker")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    options.setdefault("graceful_shutdown_timeout", timedelta(seconds=max(0.0, grace_s - 1.0)))
    worker = build_worker(client, task_queue, workflows=workflows, activities=activities, **options)
    freeze_startup()
    health = HealthServer(health_port).start() if health_port is not None else None
    code = 0

    async def watch_threads() -> None:
        nonlocal code
        while True:
            await asyncio.sleep(1.0)
            state, since = threads.THREADS.state(), threads.THREADS.stuck_since
            if state.status == "stuck" and since is not None and loop.time() - since >= stuck_exit_s:
                log.error(
                    f"every agent thread ({state.slots}) is stuck past its timeout; exiting so the worker is restarted",
                    stuck=state.stuck,
                )
                code = STUCK_EXIT_CODE
                stop.set()
                return

    running = asyncio.create_task(worker.run())
    watcher = asyncio.create_task(watch_threads())
    collector = asyncio.create_task(collect_periodically())
    stopping = asyncio.create_task(stop.wait())
    try:
        if on_ready:
            on_ready()
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if running.done():
            running.result()  # a worker that failed on its own: its error
            return code
        log.info(f"draining: finishing running agents for up to {grace_s:g}s", grace_s=grace_s)
        shutdown = asyncio.create_task(worker.shutdown())
        done, _ = await asyncio.wait({shutdown}, timeout=grace_s)
        if not done:
            state = threads.THREADS.state()
            log.warning(
                f"grace period of {grace_s:g}s over; exiting with {state.busy} agent thread(s) still running",
                stuck=state.stuck,
            )
            return code or 1
        with contextlib.suppress(Exception):
            await running
        return code
    finally:
        for task in (watcher, collector, stopping):
            task.cancel()
        if health is not None:
            health.stop()
