"""ENSEMBLE_SANDBOX: the workflow sandbox's mode, on real servers and through the worker CLI."""

from __future__ import annotations

import pytest
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from ensemble.runtime import sandbox
from ensemble.runtime.worker import workflow_runner
from ensemble.spec.errors import InputError
from tests.conftest import run_cli
from tests.flowkit import run_to_end

FLOW = """
name: sandboxed
imports: [tests.agents]
agents:
  - {name: shout_fast, handler: "tests.agents:shout", fast: true}
steps:
  - agent: shout
    input: {text: $input.text}
  - agent: shout_fast
    input: {text: $shout.text}
  - name: vote
    parallel:
      branches:
        - {name: a, agent: voter, input: {vote: approve}}
        - {name: b, agent: voter, input: {vote: approve}}
      merge: {strategy: majority_vote}
"""


@pytest.mark.parametrize("mode", ["strict", "trusted", " Trusted "])
def test_modes_choose_what_the_sandbox_reimports(monkeypatch, mode):
    monkeypatch.setenv("ENSEMBLE_SANDBOX", mode)
    runner = workflow_runner()
    assert isinstance(runner, SandboxedWorkflowRunner)
    assert ("ensemble.workflows" in runner.restrictions.passthrough_modules) is (mode.strip().lower() == "trusted")


def test_unset_means_trusted(monkeypatch):
    monkeypatch.delenv("ENSEMBLE_SANDBOX", raising=False)
    assert "ensemble.workflows" in workflow_runner().restrictions.passthrough_modules


def test_unknown_mode_is_refused(monkeypatch):
    monkeypatch.setenv("ENSEMBLE_SANDBOX", "loose")
    with pytest.raises(InputError, match="ENSEMBLE_SANDBOX='loose' is not a sandbox mode: use trusted"):
        workflow_runner()


@pytest.mark.parametrize("mode", ["strict", "trusted"])
async def test_flows_run_and_replay_in_either_mode(dev_server, task_queue, monkeypatch, mode):
    monkeypatch.setenv("ENSEMBLE_SANDBOX", mode)
    _, outcome = await run_to_end(dev_server.client, task_queue, FLOW, {"text": "hi"}, max_cached_workflows=0)
    assert outcome is not None
    assert outcome.output["shout_fast"] == {"text": "HI"}
    assert outcome.output["vote"]["decision"] == "approve"


def test_the_sdk_still_offers_the_hook_the_compiled_sandbox_uses():
    # If a temporalio release moves `_Instance._run_code`, workers fall back to the SDK's runner
    # (slower, same behaviour); this test is how the fallback gets noticed.
    assert sandbox.hook_available()
    assert isinstance(workflow_runner(), sandbox.CompiledSandboxRunner)


async def test_sandbox_snippets_are_compiled_once_not_per_call(dev_server, task_queue):
    sandbox._compiled.cache_clear()
    _, outcome = await run_to_end(dev_server.client, task_queue, FLOW, {"text": "hi"}, max_cached_workflows=0)
    assert outcome is not None and outcome.output["shout"] == {"text": "HI"}
    seen = sandbox._compiled.cache_info()
    # Every workflow task of the run (replayed from scratch, as the cache is off) stepped into the
    # sandbox a few times (to create and activate the run; a payload's context is answered outside,
    # test_sandbox_contexts.py), and nearly every step reused a compiled snippet.
    assert seen.currsize <= 8, seen
    assert seen.hits >= 3 * seen.currsize, seen


def test_worker_cli_refuses_an_unknown_mode_in_one_line(dev_server):
    result = run_cli([], dev_server.env(ENSEMBLE_SANDBOX="loose"), script="worker.py", timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "ENSEMBLE_SANDBOX='loose'" in lines[0], result.stderr
