"""Only deployed code runs: a run request naming a handler the worker was not deployed with is
refused, non-retryable, with nothing imported; `validate` never executes a flow file's imports."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import uuid

import pytest
from temporalio.client import WorkflowFailureError

from ensemble.runtime.connection import has_pollers
from ensemble.spec import WORKFLOW_NAME
from tests.conftest import ROOT, run_cli, running_worker


def raw_request(handler: str, step_input: str, task_queue: str, agent: str = "x") -> dict:
    """The request of the issue, as a raw Temporal client (or `temporal workflow start`) sends it."""
    return {
        "flow": {"name": "x", "steps": [{"agent": agent, "input": step_input}]},
        "agents": {agent: {"name": agent, "handler": handler}},
        "inbox": False,
        "task_queue": task_queue,
    }


async def run_raw(client, task_queue: str, payload: dict) -> str:
    handle = await client.start_workflow(
        WORKFLOW_NAME, payload, id=f"lpe-{uuid.uuid4().hex[:8]}", task_queue=task_queue
    )
    with pytest.raises(WorkflowFailureError) as info:
        await asyncio.wait_for(handle.result(), 60)
    err: BaseException | None = info.value
    messages = []
    while err is not None:
        messages.append(str(err))
        err = err.__cause__
    return " | ".join(messages)


@pytest.mark.parametrize(
    ("handler", "command"),
    [("os:system", "touch {marker}"), ("builtins:eval", "open({marker!r}, 'w').write('pwned')")],
)
async def test_request_naming_an_undeployed_handler_is_refused_and_runs_nothing(
    dev_server, task_queue, tmp_path, handler, command
):
    marker = tmp_path / "pwned.txt"
    async with running_worker(dev_server.client, task_queue):
        message = await run_raw(
            dev_server.client, task_queue, raw_request(handler, command.format(marker=str(marker)), task_queue)
        )
    assert "not deployed to this worker" in message, message
    assert not marker.exists()


async def test_request_naming_an_unimported_module_imports_nothing(dev_server, task_queue, tmp_path, monkeypatch):
    marker = tmp_path / "imported.txt"
    (tmp_path / "sidefx_rce.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\ndef f(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    async with running_worker(dev_server.client, task_queue):
        message = await run_raw(dev_server.client, task_queue, raw_request("sidefx_rce:f", "hi", task_queue))
    assert "not deployed" in message
    assert not marker.exists() and "sidefx_rce" not in sys.modules


async def test_a_deployed_agent_name_cannot_be_given_another_handler(dev_server, task_queue, tmp_path):
    import tests.agents  # noqa: F401  deploys `echo` (tests.agents:echo) to this process

    async with running_worker(dev_server.client, task_queue):
        message = await run_raw(
            dev_server.client, task_queue, raw_request("tests.agents:broken", "hi", task_queue, agent="echo")
        )
    assert "agent 'echo' is deployed to this worker with handler tests.agents:echo" in message


SIDE_EFFECT_FLOW = """
name: sidefx
imports: [sidefx_validate]
steps:
  - agent: whatever
    input: $input
"""


def test_validate_does_not_import_a_flow_files_modules(dev_server, tmp_path):
    marker = tmp_path / "ran.txt"
    (tmp_path / "sidefx_validate.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    flow = tmp_path / "sidefx.yaml"
    flow.write_text(SIDE_EFFECT_FLOW)
    env = dev_server.env()
    env["PYTHONPATH"] = f"{env['PYTHONPATH']}:{tmp_path}"
    result = run_cli(["validate", str(flow)], env)
    assert result.returncode == 0, result.stderr
    assert "not checked" in result.stdout and "sidefx_validate" in result.stdout
    assert not marker.exists()
    # Asked explicitly, validate imports, and says so first.
    result = run_cli(["validate", "--import", str(flow)], env)
    assert "importing" in result.stdout
    assert marker.exists()


ALLOWED_FLOW = """
name: allowed
agents:
  - {name: shouter, handler: "allowed_agents:shout"}
steps:
  - agent: shouter
    input: $input
"""


async def test_worker_runs_a_flow_file_only_when_started_with_it(dev_server, task_queue, tmp_path):
    (tmp_path / "allowed_agents.py").write_text(
        textwrap.dedent("""
        def shout(text):
            return str(text).upper()
    """)
    )
    flow = tmp_path / "allowed.yaml"
    flow.write_text(ALLOWED_FLOW)
    env = dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue, ENSEMBLE_FLOWS="")
    env["PYTHONPATH"] = f"{env['PYTHONPATH']}:{tmp_path}"

    async def with_worker(*flags: str) -> subprocess.CompletedProcess:
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "stdin": subprocess.DEVNULL}
        worker = subprocess.Popen([sys.executable, "worker.py", *flags], cwd=ROOT, env=env, **quiet)
        try:
            for _ in range(600):  # the CLI below must find this worker polling, not start its own
                if await has_pollers(dev_server.client, task_queue, activities=True):
                    break
                assert worker.poll() is None, "the worker exited"
                await asyncio.sleep(0.1)
            started = await asyncio.to_thread(run_cli, ["run", str(flow), "--input", '"hi"', "--json"], env)
            assert started.returncode == 0, started.stderr
            run_id = json.loads(started.stdout)["run_id"]
            return await asyncio.to_thread(run_cli, ["result", run_id, "--json"], env, timeout=90)
        finally:
            worker.terminate()
            worker.wait(timeout=30)

    refused = await with_worker()
    assert refused.returncode == 1 and "not deployed" in refused.stdout + refused.stderr
    allowed = await with_worker("--flows", str(flow))
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert '"HI"' in allowed.stdout
