"""ENSEMBLE_ACTIVITY_SLOTS: a fixed number of agent attempts in flight per worker, or `auto[:MAX]`,
the SDK's resource-based slots (handed out while CPU and memory stay under target, up to MAX).
ENSEMBLE_WORKFLOW_CACHE: the runs a worker keeps in memory."""

from __future__ import annotations

import pytest
from temporalio.worker import FixedSizeSlotSupplier, ResourceBasedSlotSupplier

from ensemble.activities.threads import DEFAULT_SLOTS, THREADS
from ensemble.runtime.worker import AutoSlots, activity_slots, agent_threads, build_worker, workflow_cache
from ensemble.spec.errors import InputError
from tests import agents
from tests.flowkit import run_to_end

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
    [("", DEFAULT_SLOTS), ("250", 250), ("auto", AutoSlots()), (" AUTO:4000 ", AutoSlots(maximum=4000))],
)
def test_the_setting_reads_a_number_or_auto(monkeypatch, raw, want):
    monkeypatch.setenv("ENSEMBLE_ACTIVITY_SLOTS", raw)
    assert activity_slots() == want


@pytest.mark.parametrize("raw", ["auto:", "auto:0", "auto:many", "0", "lots"])
def test_a_bad_setting_is_one_line(monkeypatch, raw):
    monkeypatch.setenv("ENSEMBLE_ACTIVITY_SLOTS", raw)
    with pytest.raises(InputError, match="ENSEMBLE_ACTIVITY_SLOTS=") as err:
        activity_slots()
    assert "\n" not in str(err.value)


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


@pytest.mark.parametrize(("raw", "most"), [("auto:3", 3), ("2", 2)])
async def test_runs_complete_within_the_slots(dev_server, task_queue, monkeypatch, raw, most):
    """The slots bound what runs at once, with a tuner as with a number, and every branch runs."""
    monkeypatch.setenv("ENSEMBLE_ACTIVITY_SLOTS", raw)
    agents.IN_FLIGHT.update(now=0, most=0)
    _, outcome = await run_to_end(dev_server.client, task_queue, FLOW, {})
    assert outcome is not None
    assert sorted(outcome.output["fan"]["by_branch"]) == sorted(f"b{i}" for i in range(BRANCHES))
    assert agents.IN_FLIGHT["most"] == most  # reached and never exceeded


@pytest.mark.parametrize(("raw", "want"), [("", None), ("0", 0), (" 4000 ", 4000)])
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
