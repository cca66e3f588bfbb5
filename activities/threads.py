"""Where plain (sync) agents run: one bounded thread pool per worker process, that a hung agent
cannot wedge.

The pool is sized apart from the worker's activity slots: async agents (llm, http, mcp and async
function agents) take no thread, so a worker may hold far more of them in flight than it has
threads. `ENSEMBLE_AGENT_THREADS` sets the pool (default: the activity slots, at most
DEFAULT_THREADS); a sync agent beyond it waits for a thread, its attempt's timeout running.

A Python thread cannot be stopped. An agent still running past its step's timeout is *stuck*: it
keeps its thread until it returns (so the worker never runs more sync agents than it has threads
for), and the worker reports itself degraded — a log line, the `ensemble_worker_stuck_threads`
gauge and the health endpoint (`worker.py --health-port`). When every thread is stuck the worker
is of no use to sync agents: `worker.py` exits (code 3) so its supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import structlog
from temporalio import activity

# Threads for sync agents per worker process (ENSEMBLE_AGENT_THREADS): by default as many as the
# activity slots (runtime/slots.py, 2,000 by default), up to this; slots above it are for async
# agents, and a sync agent beyond it waits for a thread.
DEFAULT_THREADS = 500
STUCK_GAUGE = "ensemble_worker_stuck_threads"


@dataclass
class ThreadState:
    slots: int  # threads in the pool
    busy: int
    stuck: int

    @property
    def status(self) -> str:
        if self.stuck and self.stuck >= self.slots:
            return "stuck"
        return "degraded" if self.stuck else "ok"


class AgentThreads:
    def __init__(self) -> None:
        self.slots = 0
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.busy = 0
        self.stuck = 0
        self.stuck_since: float | None = None

    def resize(self, slots: int) -> None:
        """`slots` threads. A process running several workers gets the largest of their thread
        counts (threads already running finish on the pool they started on)."""
        with self._lock:
            if self._pool is not None and slots <= self.slots:
                return
            self.slots, old = slots, self._pool
            self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="ensemble-agent")
        if old is not None:
            old.shutdown(wait=False)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:  # an executor called outside a worker built by Ensemble
            self.resize(DEFAULT_THREADS)
        assert self._pool is not None
        return self._pool

    def state(self) -> ThreadState:
        with self._lock:
            return ThreadState(self.slots or DEFAULT_THREADS, self.busy, self.stuck)

    def _count(self, busy: int = 0, stuck: int = 0) -> None:
        with self._lock:
            self.busy += busy
            self.stuck += stuck
            if self.stuck and self.stuck_since is None:
                self.stuck_since = time.monotonic()
            elif not self.stuck:
                self.stuck_since = None

    async def run(self, fn: Callable[..., Any], *args: Any, who: str = "agent") -> Any:
        """`fn(*args)` on a pool thread. Returns or raises what it does; past the activity's
        start-to-close timeout, or when the activity is cancelled, waits on for the thread (the
        slot stays taken) and reports the worker degraded meanwhile. A cancellation once stuck (the
        worker shutting down) stops the wait; the thread is then left to the process's exit, and
        counted busy and stuck until it returns."""
        loop = asyncio.get_running_loop()
        # The agent's thread sees the activity's context (its log bindings, its trace span).
        context = contextvars.copy_context()
        # Beyond the pool's threads it waits in the pool's queue, its attempt's timeout running (as
        # Temporal's does); one that times out or is cancelled there is taken out, never run.
        queued = self._executor().submit(functools.partial(context.run, fn, *args))
        future = asyncio.wrap_future(queued, loop=loop)
        self._count(busy=1)
        timeout = _timeout_s()
        started = loop.time()
        stuck = cancelled = False
        try:
            while True:
                wait = None if stuck or timeout is None else max(0.0, started + timeout - loop.time())
                try:
                    return await asyncio.wait_for(asyncio.shield(future), wait)
                except asyncio.TimeoutError:
                    if future.done():
                        return future.result()
                except asyncio.CancelledError:
                    if future.done() or stuck:  # cancelled while already stuck: the worker is going away
                        raise
                    cancelled = True
                if queued.cancel():  # it never started: nothing is stuck
                    raise (
                        asyncio.CancelledError()
                        if cancelled
                        else TimeoutError(f"{who} waited past its timeout for a thread")
                    )
                if not stuck:
                    stuck = True
                    self._count(stuck=1)
                    state = self.state()
                    structlog.get_logger("ensemble.worker").warning(
                        "worker degraded: an agent thread is stuck past its timeout; its slot is held until it ends",
                        agent=who,
                        timeout_s=timeout,
                        stuck=state.stuck,
                        slots=state.slots,
                        cancelled=cancelled,
                    )
                    _gauge(state.stuck)
        finally:
            if queued.done():
                self._settle(stuck, who)
            else:  # cancelled again once stuck: the thread still runs, and stays counted until it returns
                queued.add_done_callback(lambda _: self._settle(stuck, who))
            if cancelled and not future.cancelled():
                raise asyncio.CancelledError()

    def _settle(self, stuck: bool, who: str) -> None:
        """An agent's thread is free again (or it never started)."""
        self._count(busy=-1, stuck=-1 if stuck else 0)
        if stuck:
            state = self.state()
            structlog.get_logger("ensemble.worker").info("a stuck agent thread returned", agent=who, stuck=state.stuck)
            _gauge(state.stuck)  # outside the activity (its thread returned later): no meter, nothing to set


def _timeout_s() -> float | None:
    try:
        td = activity.info().start_to_close_timeout
    except RuntimeError:  # not inside an activity (a direct call in a test)
        return None
    return td.total_seconds() if td else None


def _gauge(stuck: int) -> None:
    with contextlib.suppress(RuntimeError):  # outside an activity: no meter
        activity.metric_meter().create_gauge(STUCK_GAUGE, "agent threads still running past their timeout").set(stuck)


THREADS = AgentThreads()


def configure(threads: int) -> AgentThreads:
    THREADS.resize(threads)
    return THREADS
