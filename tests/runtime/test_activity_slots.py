"""ENSEMBLE_ACTIVITY_SLOTS: agent attempts in flight per worker. A fixed number (default 2,000);
`adaptive[:MAX]`: the agent threads' count at any time, more up to MAX while the event loop keeps
up and sync agents find threads; or `auto[:MAX]`, the SDK's resource-based slots (handed out while
CPU and memory stay under target, up to MAX).
ENSEMBLE_WORKFLOW_CACHE: the runs a worker keeps in memory."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request

import pytest
from temporalio.worker import FixedSizeSlotSupplier, ResourceBasedSlotSupplier

from ensemble.activities.threads import THREADS, AgentThreads
from ensemble.runtime.health import HealthServer
from ensemble.runtime.slots import (
    DEFAULT_SLOTS,
    AdaptiveSlots,
    AdaptiveSlotSupplier,
    AutoSlots,
    activity_slots,
    adaptive_view,
)
from ensemble.runtime.worker import agent_threads, build_worker, workflow_cache
from ensemble.spec.errors import InputError
from tests import agents
from tests.conftest import running_worker
from tests.flowkit import request, run_to_end, start

BRANCHES = 8
FLOW = "\n".join(
    [
        "name: slots",
        "imports: [tests.agents]",
        "steps:",
        "  - name: fan",
        "    parallel:",
        "      branches:",
        *(f"        - {{name: b{i}, agent: gauge, input: {{label: b{i}, seconds: 0.4}}}}" for i in range(BRANCHES)),
        "      merge: {strategy: collect}",
    ]
)


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("", DEFAULT_SLOTS),
        ("adaptive", AdaptiveSlots()),
        ("adaptive:800", AdaptiveSlots(maximum=800)),
        ("250", 250),
        ("auto", AutoSlots()),
        (" AUTO:4000 ", AutoSlots(maximum=4000)),
    ],
)
def test_the_setting_reads_adaptive_a_number_or_auto(monkeypatch, raw, want):
    monkeypatch.setenv("ENSEMBLE_ACTIVITY_SLOTS", raw)
    assert activity_slots() == want


@pytest.mark.parametrize("raw", ["auto:", "auto:0", "auto:many", "adaptive:", "adaptive:-3", ":5", "0", "lots"])
def test_a_bad_setting_is_one_line(monkeypatch, raw):
    monkeypatch.setenv("ENSEMBLE_ACTIVITY_SLOTS", raw)
    with pytest.raises(InputError, match="ENSEMBLE_ACTIVITY_SLOTS=") as err:
        activity_slots()
    assert "\n" not in str(err.value)


async def test_by_default_a_worker_takes_2000_agents_at_once_and_500_sync_ones(dev_server, task_queue, monkeypatch):
    monkeypatch.delenv("ENSEMBLE_ACTIVITY_SLOTS", raising=False)
    monkeypatch.delenv("ENSEMBLE_AGENT_THREADS", raising=False)
    worker = build_worker(dev_server.client, task_queue)
    assert worker.config().get("max_concurrent_activities") == DEFAULT_SLOTS == 2000
    assert worker.config().get("tuner") is None
    assert THREADS.state().slots >= 500  # the process's agent threads: the largest any of its workers asked for


async def test_auto_gives_the_worker_resource_based_activity_slots(dev_server, task_queue, monkeypatch):
    monkeypatch.setenv("ENSEMBLE_ACTIVITY_SLOTS", "auto:300")
    monkeypatch.delenv("ENSEMBLE_AGENT_THREADS", raising=False)
    worker = build_worker(dev_server.client, task_queue, max_concurrent_workflow_tasks=40)
    tuner = worker.config()["tuner"]
    assert isinstance(tuner._get_activity_task_slot_supplier(), ResourceBasedSlotSupplier)
    assert tuner._get_workflow_task_slot_supplier() == FixedSizeSlotSupplier(40)  # the other counts as given
    assert worker.config().get("max_concurrent_activities") is None
    assert agent_threads(300) == 300  # sync agents' threads: the maximum, bounded as with a number
    assert THREADS.state().slots >= 300


@pytest.mark.parametrize(("raw", "most"), [("auto:3", 3), ("2", 2), ("adaptive:3", 3)])
async def test_runs_complete_within_the_slots(dev_server, task_queue, monkeypatch, raw, most):
    """The slots bound what runs at once, with a tuner as with a number, and every branch runs."""
    monkeypatch.setenv("ENSEMBLE_ACTIVITY_SLOTS", raw)
    agents.IN_FLIGHT.update(now=0, most=0)
    _, outcome = await run_to_end(dev_server.client, task_queue, FLOW, {})
    assert outcome is not None
    assert sorted(outcome.output["fan"]["by_branch"]) == sorted(f"b{i}" for i in range(BRANCHES))
    assert agents.IN_FLIGHT["most"] == most  # reached and never exceeded


async def test_adaptive_gives_the_worker_adaptive_slots_over_its_threads(dev_server, task_queue, monkeypatch):
    monkeypatch.setenv("ENSEMBLE_ACTIVITY_SLOTS", "adaptive")
    monkeypatch.delenv("ENSEMBLE_AGENT_THREADS", raising=False)
    worker = build_worker(dev_server.client, task_queue, max_concurrent_workflow_tasks=40)
    tuner = worker.config()["tuner"]
    supplier = tuner._get_activity_task_slot_supplier()
    assert isinstance(supplier, AdaptiveSlotSupplier)
    assert supplier.config.maximum == 2000
    assert supplier.floor == THREADS.state().slots >= 500  # the process's agent threads
    assert tuner._get_workflow_task_slot_supplier() == FixedSizeSlotSupplier(40)


async def test_adaptive_slots_go_above_the_floor_while_the_worker_keeps_up(dev_server, task_queue):
    """Eight async agents at once, a floor of 2 and at most 6: the worker takes 6 of them."""
    agents.IN_FLIGHT.update(now=0, most=0)
    tuner = AdaptiveSlotSupplier(AdaptiveSlots(maximum=6, floor=2), THREADS).tuner({})
    _, outcome = await run_to_end(dev_server.client, task_queue, FLOW, {}, tuner=tuner)
    assert outcome is not None
    assert sorted(outcome.output["fan"]["by_branch"]) == sorted(f"b{i}" for i in range(BRANCHES))
    assert agents.IN_FLIGHT["most"] == 6
    assert tuner._get_activity_task_slot_supplier().most == 6


async def test_above_the_floor_a_late_event_loop_defers_the_slot():
    supplier = AdaptiveSlotSupplier(AdaptiveSlots(maximum=5, floor=1, lag_s=0.05), AgentThreads())
    first = await supplier.reserve_slot(None)  # type: ignore[arg-type]  # within the floor: at once
    assert first is not None and supplier.held == 1
    asking = asyncio.create_task(supplier.reserve_slot(None))  # type: ignore[arg-type]
    await asyncio.sleep(0)  # it starts, measures and yields to the loop ...
    time.sleep(0.2)  # ... which is busy for 200 ms before it comes back
    second = await asyncio.wait_for(asking, 5)
    assert second is not None and supplier.held == 2
    assert supplier.lagging == 1  # deferred once, then granted when the loop answered promptly
    supplier.release_slot(None)  # type: ignore[arg-type]
    supplier.release_slot(None)  # type: ignore[arg-type]
    assert supplier.held == 0


async def test_above_the_floor_no_slot_while_every_agent_thread_is_busy():
    pool = AgentThreads()
    pool.resize(1)
    supplier = AdaptiveSlotSupplier(AdaptiveSlots(maximum=5, floor=1), pool)
    await supplier.reserve_slot(None)  # type: ignore[arg-type]
    release = threading.Event()
    busy = asyncio.create_task(pool.run(release.wait, 10))  # a sync agent holds the one thread
    await asyncio.sleep(0.05)
    waiting = asyncio.create_task(supplier.reserve_slot(None))  # type: ignore[arg-type]
    await asyncio.sleep(0.3)
    assert not waiting.done() and supplier.waiting_threads > 0 and supplier.held == 1
    assert supplier.try_reserve_slot(None) is None  # type: ignore[arg-type]  # nor an eager one
    release.set()
    await busy
    assert await asyncio.wait_for(waiting, 5) is not None and supplier.held == 2


async def test_adaptive_slots_never_exceed_the_maximum():
    supplier = AdaptiveSlotSupplier(AdaptiveSlots(maximum=3, floor=1), AgentThreads())
    for _ in range(3):
        await supplier.reserve_slot(None)  # type: ignore[arg-type]
    assert supplier.try_reserve_slot(None) is None  # type: ignore[arg-type]
    fourth = asyncio.create_task(supplier.reserve_slot(None))  # type: ignore[arg-type]
    await asyncio.sleep(0.2)
    assert not fourth.done()
    supplier.release_slot(None)  # type: ignore[arg-type]
    assert await asyncio.wait_for(fourth, 5) is not None and supplier.held == 3 and supplier.most == 3


@pytest.mark.parametrize(("raw", "want"), [("", 2000), ("0", 0), (" 4000 ", 4000)])
def test_the_workflow_cache_setting(monkeypatch, raw, want):
    monkeypatch.setenv("ENSEMBLE_WORKFLOW_CACHE", raw)
    assert workflow_cache() == want


def test_a_bad_workflow_cache_is_one_line(monkeypatch):
    monkeypatch.setenv("ENSEMBLE_WORKFLOW_CACHE", "-1")
    with pytest.raises(InputError, match="ENSEMBLE_WORKFLOW_CACHE='-1' is not a number of runs"):
        workflow_cache()


async def test_the_worker_caches_as_many_runs_as_set(dev_server, task_queue, monkeypatch):
    monkeypatch.setenv("ENSEMBLE_WORKFLOW_CACHE", "7")
    assert build_worker(dev_server.client, task_queue).config()["max_cached_workflows"] == 7
    given = build_worker(dev_server.client, f"{task_queue}-b", max_cached_workflows=3)  # serve(...) options win
    assert given.config()["max_cached_workflows"] == 3
    monkeypatch.delenv("ENSEMBLE_WORKFLOW_CACHE")  # unset: 2,000 runs, where the SDK keeps 1,000
    assert build_worker(dev_server.client, f"{task_queue}-c").config()["max_cached_workflows"] == 2000


async def test_the_health_endpoint_shows_the_adaptive_slots(dev_server, task_queue, monkeypatch):
    """While a worker with adaptive slots runs agents, /health shows what its slots hold."""
    monkeypatch.setenv("ENSEMBLE_ACTIVITY_SLOTS", "adaptive")
    agents.RELEASE.clear()
    health = HealthServer(0).start()
    try:
        flow = FLOW.replace("agent: gauge", "agent: held")
        async with running_worker(dev_server.client, task_queue) as worker:
            handle = await start(dev_server.client, request(flow, {}, task_queue))

            def view() -> dict:
                with urllib.request.urlopen(f"http://127.0.0.1:{health.port}/health", timeout=5) as answer:
                    return json.loads(answer.read())

            for _ in range(200):
                body = await asyncio.to_thread(view)
                mine = [v for v in body.get("activity_slots", []) if v["held"] >= BRANCHES]
                if mine:
                    break
                await asyncio.sleep(0.05)
            assert mine, body
            assert mine[0]["floor"] >= 500 and mine[0]["maximum"] == 2000 and mine[0]["most"] >= BRANCHES
            assert mine[0]["gate"] in ("open", "loop late", "threads busy", "at maximum")
            agents.RELEASE.set()
            await handle.result()
            assert worker.adaptive_slots is not None and worker.adaptive_slots.view() in adaptive_view()
        # a stopped worker's slots leave the view (a process may run other workers after it)
        assert worker.adaptive_slots.view() not in adaptive_view()
    finally:
        agents.RELEASE.set()
        health.stop()
