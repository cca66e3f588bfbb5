"""How many agent attempts a worker takes on at once: `ENSEMBLE_ACTIVITY_SLOTS`.

- unset: 2,000, fixed (`DEFAULT_SLOTS`; the SDK's default is 100). Sync agents among them run on
  at most 500 threads (ENSEMBLE_AGENT_THREADS); the slots above are for async agents.
- a number: that many, fixed (the SDK's `max_concurrent_activities`).
- `adaptive` or `adaptive:MAX` (MAX 2,000): `AdaptiveSlots`. The worker always takes as many
  agents at once as it has threads for sync agents (ENSEMBLE_AGENT_THREADS, 500 by default: the
  floor); above that it takes one more only while its event loop keeps up (a yield to the loop
  comes back within `lag_s`, 100 ms) and a sync agent would find a free thread. Model-bound
  agents (a coroutine each while they wait) then fill the worker up to what its CPU sustains, and
  what it cannot start promptly waits on the server, where no timeout runs. Not the default: it
  holds back whenever the loop is late, which a saturated worker's is, and took 1.21x of 500 fixed
  slots at N = 1,000, L = 5 s where 2,000 fixed took 1.37x (docs/performance.md, "The default:
  2,000 slots").
- `auto` or `auto:MAX`: the SDK's resource-based slot supplier (`AutoSlots`), which hands out
  slots while the machine's CPU and memory stay under their targets.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from temporalio.worker import (
    CustomSlotSupplier,
    FixedSizeSlotSupplier,
    ResourceBasedSlotConfig,
    ResourceBasedSlotSupplier,
    ResourceBasedTunerConfig,
    SlotMarkUsedContext,
    SlotPermit,
    SlotReleaseContext,
    SlotReserveContext,
    WorkerTuner,
)

from ensemble.runtime.settings import positive_setting
from ensemble.spec.errors import InputError

ENV = "ENSEMBLE_ACTIVITY_SLOTS"
# 2,000, not the SDK's 100: a slot is held for the whole model call, so with 5-second calls 100 slots
# held a 2-core worker to 20 calls a second, and 500 to about three quarters of what its CPU sustains
# with 1,000 runs in flight; 2,000 gave up nothing where the CPU binds (docs/performance.md, "The
# default: 2,000 slots").
DEFAULT_SLOTS = 2000


class ThreadCount(Protocol):
    busy: int  # sync agents given to the pool: running, stuck or waiting for a thread
    slots: int  # threads in the pool


class AgentPool(Protocol):
    """The worker's threads for sync agents (`ensemble.activities.threads.AgentThreads`)."""

    def state(self) -> ThreadCount: ...


# The SDK's defaults for the slots a tuner must also name.
SDK_SLOTS = 100


def _composite(activity: CustomSlotSupplier | ResourceBasedSlotSupplier, options: dict[str, Any]) -> WorkerTuner:
    """A tuner with these activity slots; the worker's other fixed slot counts (taken out of
    `options`, which may not name both) stay as given or at the SDK's defaults."""

    def fixed(key: str) -> FixedSizeSlotSupplier:
        return FixedSizeSlotSupplier(options.pop(key, None) or SDK_SLOTS)

    return WorkerTuner.create_composite(
        workflow_supplier=fixed("max_concurrent_workflow_tasks"),
        activity_supplier=activity,
        local_activity_supplier=fixed("max_concurrent_local_activities"),
        nexus_supplier=fixed("max_concurrent_nexus_tasks"),
    )


@dataclass(frozen=True)
class AutoSlots:
    """`ENSEMBLE_ACTIVITY_SLOTS=auto[:MAX]`: activity slots handed out while the machine's CPU and
    memory stay under their targets, from `minimum` up to `maximum` (the SDK's resource-based slot
    supplier)."""

    maximum: int = 2000
    minimum: int = 50
    target_cpu: float = 0.7
    target_memory: float = 0.8
    ramp: timedelta = timedelta(milliseconds=10)  # between slots above the minimum: 100 agent starts/s at most

    def tuner(self, options: dict[str, Any]) -> WorkerTuner:
        activity = ResourceBasedSlotSupplier(
            ResourceBasedSlotConfig(minimum_slots=min(self.minimum, self.maximum), maximum_slots=self.maximum,
                                    ramp_throttle=self.ramp),
            ResourceBasedTunerConfig(target_memory_usage=self.target_memory, target_cpu_usage=self.target_cpu),
        )  # fmt: skip
        return _composite(activity, options)


@dataclass(frozen=True)
class AdaptiveSlots:
    """`adaptive[:MAX]`: up to `floor` agents at once whatever the load (None: the worker's agent
    threads), up to `maximum` while the worker keeps up (the module docstring and
    `AdaptiveSlotSupplier`)."""

    maximum: int = 2000
    floor: int | None = None
    lag_s: float = 0.1  # how late a yield to the event loop may come back for the worker to take more


class AdaptiveSlotSupplier(CustomSlotSupplier):
    """Activity slots for one worker: `floor` at once at any time, more up to `maximum` while the
    event loop keeps up and no sync agent waits for a thread.

    The Rust core reserves a slot before each poll for an activity task and releases it when the
    task ends (or the poll comes back empty). A reservation above the floor first yields to the
    event loop once: the time that yield takes is how long the loop's ready work already waits
    (agents' model replies, heartbeats, workflow activations taking their turn), so a late yield
    means the worker is behind and a new agent would only add to the wait. Such a reservation
    waits, and asks again every `RETRY_S`."""

    RETRY_S = 0.02

    def __init__(self, config: AdaptiveSlots, agent_threads: AgentPool) -> None:
        self.config = config
        self._threads = agent_threads
        self.floor = min(config.floor if config.floor is not None else self._threads.state().slots, config.maximum)
        self._lock = threading.Lock()  # release_slot may be called from a thread of the Rust core
        self.held = 0  # permits reserved and not yet released
        self.most = 0  # the most held at once
        self.lagging = 0  # times a reservation above the floor was deferred because the loop was behind
        self.waiting_threads = 0  # ... because no thread was free for a sync agent
        self.gate = "open"  # the last decision above the floor: open, loop late, threads busy, at maximum
        _SUPPLIERS.add(self)

    def tuner(self, options: dict[str, Any]) -> WorkerTuner:
        """A worker tuner with these activity slots (the other counts from `options`)."""
        return _composite(self, options)

    def _take(self, limit: int) -> SlotPermit | None:
        with self._lock:
            if self.held >= limit:
                return None
            self.held += 1
            self.most = max(self.most, self.held)
            return SlotPermit()

    def _threads_free(self) -> bool:
        state = self._threads.state()
        return state.busy < state.slots

    async def reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit:
        loop = asyncio.get_running_loop()
        while True:
            permit = self._take(self.floor)
            if permit is not None:
                return permit
            if self.held >= self.config.maximum:
                self.gate = "at maximum"
            elif not self._threads_free():
                self.gate = "threads busy"
                self.waiting_threads += 1
            else:
                asked = loop.time()
                await asyncio.sleep(0)
                if loop.time() - asked <= self.config.lag_s:
                    self.gate = "open"
                    permit = self._take(self.config.maximum)
                    if permit is not None:
                        return permit
                else:
                    self.gate = "loop late"
                    self.lagging += 1
            await asyncio.sleep(self.RETRY_S)

    def try_reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit | None:
        # Eager activities (handed back with a completed workflow task): only within the floor, or
        # above it while no sync agent waits for a thread (there is no waiting here to measure the loop).
        permit = self._take(self.floor)
        if permit is None and self._threads_free():
            permit = self._take(self.config.maximum)
        return permit

    def mark_slot_used(self, ctx: SlotMarkUsedContext) -> None:
        return None

    def release_slot(self, ctx: SlotReleaseContext) -> None:
        with self._lock:
            self.held = max(0, self.held - 1)

    def view(self) -> dict[str, Any]:
        """What the health endpoint shows of these slots."""
        return {
            "held": self.held,
            "floor": self.floor,
            "maximum": self.config.maximum,
            "most": self.most,
            "gate": self.gate,
            "deferred_loop_late": self.lagging,
            "deferred_threads_busy": self.waiting_threads,
        }


_SUPPLIERS: weakref.WeakSet[AdaptiveSlotSupplier] = weakref.WeakSet()


def retire(supplier: AdaptiveSlotSupplier) -> None:
    """A stopped worker's adaptive slots leave the health view (`adaptive_view`)."""
    _SUPPLIERS.discard(supplier)


def adaptive_view() -> list[dict[str, Any]]:
    """The adaptive activity slots of every worker in this process (one entry per worker)."""
    return [supplier.view() for supplier in list(_SUPPLIERS)]


def activity_slots() -> int | AutoSlots | AdaptiveSlots:
    """Agent attempts in flight per worker, from ENSEMBLE_ACTIVITY_SLOTS (module docstring)."""
    raw = os.environ.get(ENV, "").strip().lower()
    kind, colon, top = raw.partition(":")
    if not raw:
        return DEFAULT_SLOTS
    if kind in ("adaptive", "auto"):
        if not colon:
            return AutoSlots() if kind == "auto" else AdaptiveSlots()
        if not top.isdigit() or int(top) < 1:
            raise InputError(f"{ENV}={raw!r}: after {kind}: comes the most slots, a positive number")
        return AutoSlots(maximum=int(top)) if kind == "auto" else AdaptiveSlots(maximum=int(top))
    return positive_setting(ENV, DEFAULT_SLOTS, "concurrent agents (or adaptive, auto)")


def maximum(slots: int | AutoSlots | AdaptiveSlots) -> int:
    return slots if isinstance(slots, int) else slots.maximum
