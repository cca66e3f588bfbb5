"""Sync agents' thread pool is sized apart from the worker's activity slots: async agents are
bounded by the slots only, sync agents by the threads; one waiting for a thread and cancelled there
never runs and is not counted stuck."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ensemble.activities.threads import DEFAULT_THREADS, AgentThreads
from ensemble.runtime.slots import DEFAULT_SLOTS, AdaptiveSlots, activity_slots, maximum
from ensemble.runtime.worker import agent_threads
from ensemble.spec.errors import InputError


def test_slots_and_threads_are_set_apart(monkeypatch):
    monkeypatch.delenv("ENSEMBLE_ACTIVITY_SLOTS", raising=False)
    monkeypatch.delenv("ENSEMBLE_AGENT_THREADS", raising=False)
    assert (activity_slots(), agent_threads(maximum(activity_slots()))) == (DEFAULT_SLOTS, DEFAULT_THREADS)
    # by default 2,000 agents at once, 500 of them sync: the slots above the threads are for async agents
    assert (DEFAULT_SLOTS, DEFAULT_THREADS) == (2000, 500)
    monkeypatch.setenv("ENSEMBLE_ACTIVITY_SLOTS", "adaptive")  # up to 2,000; its floor is the threads
    assert (activity_slots(), agent_threads(maximum(activity_slots()))) == (AdaptiveSlots(), DEFAULT_THREADS)
    monkeypatch.setenv("ENSEMBLE_ACTIVITY_SLOTS", "2000")  # raised for async agents: the threads stay bounded
    assert (activity_slots(), agent_threads(maximum(activity_slots()))) == (2000, DEFAULT_THREADS)
    monkeypatch.setenv("ENSEMBLE_ACTIVITY_SLOTS", "20")
    assert agent_threads(maximum(activity_slots())) == 20  # never more threads than slots by default
    monkeypatch.setenv("ENSEMBLE_AGENT_THREADS", "7")
    assert agent_threads(maximum(activity_slots())) == 7
    monkeypatch.setenv("ENSEMBLE_AGENT_THREADS", "none")
    with pytest.raises(InputError, match="ENSEMBLE_AGENT_THREADS='none' is not a positive number"):
        agent_threads(20)


async def test_a_sync_agent_cancelled_while_waiting_for_a_thread_never_runs():
    pool = AgentThreads()
    pool.resize(1)
    release = threading.Event()
    ran: list[str] = []

    def agent(name: str) -> str:
        ran.append(name)
        release.wait(10)
        return name

    first = asyncio.create_task(pool.run(agent, "first"))
    while not ran:
        await asyncio.sleep(0.01)
    queued = asyncio.create_task(pool.run(agent, "queued"))
    await asyncio.sleep(0.05)
    assert pool.state().busy == 2
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert pool.state().stuck == 0 and pool.state().busy == 1
    release.set()
    assert await first == "first"
    assert ran == ["first"] and pool.state().busy == 0


async def test_a_stuck_thread_stays_counted_after_its_wait_is_cancelled_again():
    """Cancelled once, a running sync agent is stuck; cancelled again (the worker stopping), its
    coroutine leaves, but the thread still runs: it counts as busy and stuck until it returns."""
    pool = AgentThreads()
    pool.resize(1)
    release = threading.Event()
    running = threading.Event()

    def agent() -> str:
        running.set()
        release.wait(10)
        return "done"

    task = asyncio.create_task(pool.run(agent))
    await asyncio.to_thread(running.wait, 5)
    task.cancel()  # the first cancellation: the thread cannot stop, so it is stuck
    await asyncio.sleep(0.05)
    assert not task.done() and (pool.state().busy, pool.state().stuck) == (1, 1)
    task.cancel()  # the second: the wait ends
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (pool.state().busy, pool.state().stuck, pool.state().status) == (1, 1, "stuck")
    release.set()
    for _ in range(100):
        if pool.state().busy == 0:
            break
        await asyncio.sleep(0.02)
    assert (pool.state().busy, pool.state().stuck, pool.state().status) == (0, 0, "ok")
