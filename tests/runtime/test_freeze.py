"""A worker process freezes what it holds at startup (`freeze_startup`, called by `serve`): the
garbage collector's full collections then walk only what runs create. Checked in a process of its
own that imports what a worker imports (freezing the test process would keep every later test's
garbage cycles)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

PROBE = """
import gc, json
from ensemble.runtime.worker import freeze_startup

before = len(gc.get_objects())
freeze_startup()
print(json.dumps({"before": before, "frozen": gc.get_freeze_count(), "after": len(gc.get_objects())}))
"""


def test_a_worker_process_freezes_its_startup_objects():
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    counts = json.loads(out.stdout)
    assert counts["frozen"] > 50_000  # modules, models, flows: the bulk of a worker's heap
    assert counts["after"] < counts["before"] / 10  # what a full collection still walks
