"""A worker process freezes what it holds at startup (`freeze_startup`, called by `serve`): the
garbage collector's full collections then walk only what runs create. Checked in a process of its
own that imports what a worker imports (freezing the test process would keep every later test's
garbage cycles)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ensemble.runtime.worker import DEFAULT_GC_THRESHOLD, GC_THRESHOLD_ENV, gc_threshold
from ensemble.spec.errors import InputError
from tests.conftest import ROOT

PROBE = """
import gc, json
from ensemble.runtime.worker import freeze_startup

before = len(gc.get_objects())
freeze_startup()
print(json.dumps({"before": before, "frozen": gc.get_freeze_count(), "after": len(gc.get_objects()),
                  "threshold": gc.get_threshold()}))
"""


def probe(**env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if k != GC_THRESHOLD_ENV}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env={**environ, **env}, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_worker_process_freezes_its_startup_objects():
    counts = probe()
    assert counts["frozen"] > 50_000  # modules, models, flows: the bulk of a worker's heap
    assert counts["after"] < counts["before"] / 10  # what a full collection still walks
    # and collects its young objects as Python does by default
    assert counts["threshold"] == [DEFAULT_GC_THRESHOLD, 10, 10] and DEFAULT_GC_THRESHOLD == 700


def test_the_young_collection_threshold_is_a_setting(monkeypatch):
    assert probe(**{GC_THRESHOLD_ENV: "20000"})["threshold"] == [20_000, 10, 10]  # the older generations' stay
    monkeypatch.setenv(GC_THRESHOLD_ENV, "lots")
    with pytest.raises(InputError, match="ENSEMBLE_GC_THRESHOLD='lots' is not a positive number"):
        gc_threshold()


PERIODIC = """
import asyncio, gc, json, sys, weakref
from ensemble.runtime.worker import collect_periodically, freeze_startup

freeze_startup()


class Node:
    pass


def old_cycle():
    a, b = Node(), Node()
    a.b, b.a = b, a
    gc.collect()  # it survives a collection while held: it is in the oldest generation now
    return weakref.ref(a)


ref = old_cycle()  # and unreachable: garbage that only a full collection frees (an evicted run's)


async def main(busy):
    task = asyncio.create_task(collect_periodically(0.3))
    await asyncio.sleep(0)  # it has started
    if busy:
        junk = [[i] for i in range(100_000)]  # enough allocations for young collections
        del junk
    await asyncio.sleep(0.1)
    before = ref() is not None
    await asyncio.sleep(0.6)
    task.cancel()
    return {"before": before, "after": ref() is not None}


print(json.dumps(asyncio.run(main(sys.argv[1] == "busy"))))
"""


@pytest.mark.parametrize("busy", [True, False])
def test_a_worker_that_allocates_collects_old_garbage_every_so_often(busy):
    """Young collections every 20,000 allocations (ENSEMBLE_GC_THRESHOLD) make full collections
    rare; such a worker, when it allocates (runs evicted from its cache are old garbage), collects
    everything every 30 s, and when idle is left alone."""
    out = subprocess.run(
        [sys.executable, "-c", PERIODIC, "busy" if busy else "idle"],
        cwd=ROOT,
        env={**os.environ, GC_THRESHOLD_ENV: "20000"},  # raised: full collections come rarely
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["before"] is True, "young collections alone do not free an old cycle"
    assert seen["after"] is (not busy)
