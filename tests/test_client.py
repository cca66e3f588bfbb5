"""The Python client API against the dev server: start, follow, wait for a gate and the end,
decide, cancel, list the inbox, and the same errors the CLI prints as one line."""

from __future__ import annotations

import asyncio
import json

import pytest

from ensemble import EnsembleClient, EnsembleError, InputError, RunOutcome
from tests.conftest import ROOT, running_worker

REQUEST = json.loads((ROOT / "examples/procurement/request.json").read_text())  # a split vote


@pytest.fixture
async def ensemble(dev_server, task_queue, monkeypatch) -> EnsembleClient:
    monkeypatch.setenv("ENSEMBLE_TASK_QUEUE", task_queue)
    return await EnsembleClient.connect()


async def test_start_wait_for_the_gate_decide_and_wait_for_the_end(ensemble, task_queue):
    async with running_worker(ensemble.temporal, task_queue):
        run = await ensemble.start("procurement", REQUEST, run_id=f"client-{task_queue}")
        assert run.run_id == f"client-{task_queue}" and run.flow == "procurement"
        parked = await ensemble.wait(run.run_id)
        assert isinstance(parked, RunOutcome) and parked.status == "waiting_for_approval"
        [gate] = parked.pending_approvals
        assert gate["gate"] == "committee" and gate["quorum"] == 2
        mine = [r for r in await _inbox(ensemble, run.run_id, "dave") if r["gate"] == "committee"]
        assert mine and mine[0]["run_id"] == run.run_id
        first = await ensemble.approve(run.run_id, "committee", by="dave")
        assert (first.status, first.approvals) == ("open", 1)
        view = await ensemble.status(run.run_id)
        assert view.status == "waiting_for_approval" and view.pending_approvals[0]["approved_by"] == ["dave"]
        with pytest.raises(EnsembleError, match="dave"):  # the run refuses a second decision by the same person
            await ensemble.approve(run.run_id, "committee", by="dave")
        await ensemble.approve(run.run_id, "committee", by="erin")
        done = await ensemble.wait(run.run_id, until="end")
    assert done.status == "completed" and done.result["decided_by"] == "purchasing committee (dave, erin)"
    with pytest.raises(EnsembleError, match="already exists"):  # a run id names one run, ever
        await ensemble.start("procurement", REQUEST, run_id=run.run_id)


async def _inbox(ensemble: EnsembleClient, run_id: str, approver: str) -> list[dict]:
    for _ in range(100):  # visibility is eventually consistent
        rows = [r for r in await ensemble.pending(approver) if r["run_id"] == run_id]
        if rows:
            return rows
        await asyncio.sleep(0.2)
    raise AssertionError(f"{run_id} never reached {approver}'s inbox")


async def test_wait_with_a_timeout_returns_the_run_as_it_stands(ensemble):
    run = await ensemble.start("hello", {"name": "Ada"})  # no worker serves it yet
    outcome = await ensemble.wait(run.run_id, timeout=0.5)
    assert outcome.status == "running"
    served = await ensemble.wait(run.run_id, until="end", serve=True)  # a worker in this process
    assert served.status == "completed" and served.result["greeting"] == "Hello, Ada!"


async def test_cancel_ends_a_parked_run_canceled(ensemble, task_queue):
    async with running_worker(ensemble.temporal, task_queue):
        run = await ensemble.start("procurement", REQUEST)
        assert (await ensemble.wait(run.run_id)).status == "waiting_for_approval"
        await ensemble.cancel(run.run_id, reason="withdrawn")
        outcome = await ensemble.wait(run.run_id, until="end")
    assert outcome.status == "canceled"
    with pytest.raises(EnsembleError, match="only a running run can be canceled"):
        await ensemble.cancel(run.run_id)


async def test_the_errors_are_the_cli_s(ensemble):
    with pytest.raises(InputError, match="unknown flow 'nope'"):
        await ensemble.start("nope", {})
    with pytest.raises(InputError, match="input does not match flow 'procurement'"):
        await ensemble.start("procurement", {"item": 3})
    with pytest.raises(EnsembleError, match="no run with id 'missing'"):
        await ensemble.status("missing")
    with pytest.raises(EnsembleError, match="no run with id 'missing'"):
        await ensemble.approve("missing", "committee", by="dave")


def test_the_readme_example_runs_as_written(dev_server, task_queue, tmp_path):
    import re
    import subprocess
    import sys

    code = re.search(r"```python\n(# approve\.py.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    (tmp_path / "approve.py").write_text(code)
    env = dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue)
    result = subprocess.run(
        [sys.executable, "approve.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "waiting_for_approval ['committee']",
        "completed purchasing committee (dave, erin)",
    ]
