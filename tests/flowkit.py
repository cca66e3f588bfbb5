"""Helpers for tests that start flow runs directly through a Temporal client."""

from __future__ import annotations

import uuid
from typing import Any

import yaml
from temporalio.client import Client, WorkflowHandle

from ensemble.authoring.flows import parse_flow
from ensemble.spec import WORKFLOW_NAME, FlowOutcome, RunRequest


def request(
    flow: str | dict, run_input: Any, task_queue: str, *, inbox: bool = True, trusted: bool = True
) -> RunRequest:
    """A run request; `inbox=False` for the time-skipping server, which has no custom search attributes;
    `trusted=False` builds it without deploying its code to this process (as another machine would)."""
    data = yaml.safe_load(flow) if isinstance(flow, str) else flow
    loaded = parse_flow(data, "test flow", trusted=trusted)
    return RunRequest(flow=loaded.spec, agents=loaded.agents, input=run_input, task_queue=task_queue, inbox=inbox)


async def start(client: Client, req: RunRequest, run_id: str | None = None) -> WorkflowHandle:
    return await client.start_workflow(
        WORKFLOW_NAME,
        req,
        id=run_id or f"{req.flow.name}-{uuid.uuid4().hex[:8]}",
        task_queue=req.task_queue,
        result_type=FlowOutcome,
    )


async def run_to_end(
    client: Client, task_queue: str, flow: str | dict, run_input: Any, **worker: Any
) -> tuple[WorkflowHandle, FlowOutcome | None]:
    """Run a flow with a worker in this process; its handle and outcome (None when it failed)."""
    from temporalio.client import WorkflowFailureError

    from tests.conftest import running_worker

    async with running_worker(client, task_queue, **worker):
        handle = await start(client, request(flow, run_input, task_queue))
        try:
            return handle, await handle.result()
        except WorkflowFailureError:
            return handle, None


def retried_flow(name: str) -> str:
    """Three agents, the middle one (`flaky`) failing its first attempt: a run with a retry to look at."""
    return f"""
name: {name}
imports: [tests.agents]
steps:
  - agent: shout
    input: {{text: $input.text}}
  - agent: flaky
    input: {{}}
  - agent: count
    input: {{text: $shout.text}}
"""


APPROVERS = {"legal": ["alice"], "committee": ["dave", "erin"]}  # enough of examples/approvers.yaml to approve


def run_bundled(env: dict[str, str], flow: str, input_path: Any, *, expect_gate: bool | None = None) -> dict[str, Any]:
    """Run a flow through the CLI to its end (`run --wait --json`), approving through the CLI a gate
    it parks at, by the bundled approvers; the final `{run_id, status, result}`."""
    import json

    from tests.conftest import run_cli

    result = run_cli(["run", flow, "--input", f"@{input_path}", "--wait", "--json"], env)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    if expect_gate is not None:
        assert (out["status"] == "waiting_for_approval") == expect_gate, out
    if out["status"] == "waiting_for_approval":
        [gate] = out["pending_approvals"]
        for person in APPROVERS[gate["gate"]]:
            decided = run_cli(["approve", out["run_id"], "--gate", gate["gate"], "--by", person, "--json"], env)
            assert decided.returncode == 0, decided.stderr
        out = json.loads(decided.stdout)["run"]
    assert out["status"] == "completed", out
    return out
