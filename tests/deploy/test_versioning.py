"""Worker Versioning on the dev server: runs parked at an approval gate on build A finish on A after
build B is made current, new runs start on B, flows without a gate follow the current build, and
`upgrade-check` catches a deliberately incompatible change before it is deployed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import textwrap
import uuid

from temporalio.api.enums.v1 import VersioningBehavior
from temporalio.api.workflowservice.v1 import SetWorkerDeploymentCurrentVersionRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkerDeploymentVersion
from temporalio.service import RPCError

from ensemble.cli.upgrade import check
from ensemble.runs import inbox
from ensemble.runtime import versioning
from ensemble.runtime.worker import WORKFLOWS, build_worker
from ensemble.spec import GateDecision, protocol
from tests.conftest import ROOT, run_cli
from tests.flowkit import request

AGENT_QUEUE_SUFFIX = "-agents"


def gated(task_queue: str) -> dict:
    """Draft, a gate, then a step whose agent runs on its own task queue (workers of its own)."""
    return {
        "name": "gated_upgrade",
        "agents": [
            {"name": "send_remote", "handler": "tests.agents:echo", "task_queue": task_queue + AGENT_QUEUE_SUFFIX}
        ],
        "imports": ["tests.agents"],
        "steps": [
            {"name": "draft", "agent": "echo", "input": {"text": "$input.text"}},
            {"name": "legal", "gate": {"approvers": ["alice"]}},
            {"name": "send", "agent": "send_remote", "input": "$draft"},
        ],
    }


GATED = gated("unused")
PLAIN = {
    "name": "plain_upgrade",
    "imports": ["tests.agents"],
    "steps": [{"name": "shout", "agent": "shout", "input": {"text": "$input.text"}}],
}

# Build "B" with an incompatible change: a step runs a different agent than the recorded one.
CHANGED = """
from datetime import timedelta
from typing import Any

from temporalio import workflow


@workflow.defn(name="EnsembleFlow")
class Reordered:
    @workflow.run
    async def run(self, request: Any) -> Any:
        await workflow.execute_activity("count", {}, activity_id="draft", start_to_close_timeout=timedelta(seconds=5))
        return {}
"""


async def set_current(client: Client, deployment: str, build_id: str) -> None:
    """Make a version current once its worker has registered it (its first poll)."""
    for _ in range(200):
        try:
            await client.workflow_service.set_worker_deployment_current_version(
                SetWorkerDeploymentCurrentVersionRequest(
                    namespace=client.namespace, deployment_name=deployment, build_id=build_id
                )
            )
            return
        except RPCError as err:
            last = err
            await asyncio.sleep(0.1)
    raise AssertionError(f"could not make {deployment}.{build_id} current: {last}")


async def version_of(handle: WorkflowHandle) -> tuple[str, int]:
    info = (await handle.describe()).raw_description.workflow_execution_info.versioning_info
    return info.deployment_version.build_id, info.behavior


async def wait_gate(handle: WorkflowHandle) -> None:
    for _ in range(400):
        with contextlib.suppress(RPCError):
            if await handle.query("pending"):
                return
        await asyncio.sleep(0.05)
    raise AssertionError("the gate did not open")


async def start(client: Client, flow: dict, task_queue: str, tag: str) -> WorkflowHandle:
    req = request(flow, {"text": tag}, task_queue)
    return await client.start_workflow(
        "EnsembleFlow",
        req,
        id=f"{flow['name']}-{tag}-{uuid.uuid4().hex[:6]}",
        task_queue=task_queue,
        versioning_override=versioning.start_override(req.flow),
        search_attributes=TypedSearchAttributes(
            [SearchAttributePair(protocol.FLOW, req.flow.name)]
        ),  # as `starter.py run` does
    )


@contextlib.asynccontextmanager
async def workers_of_build(client: Client, task_queue: str, deployment: str, build_id: str):
    """One build of the workers: flows on the run's queue, the remote agent on its own queue, both
    in the same Worker Deployment version (one version spans every queue its workers poll)."""
    config = versioning.deployment_config(deployment, build_id)
    async with (
        build_worker(client, task_queue, deployment_config=config, identity=f"{build_id}-flows"),
        build_worker(
            client,
            task_queue + AGENT_QUEUE_SUFFIX,
            workflows=False,
            deployment_config=config,
            identity=f"{build_id}-agents",
        ),
    ):
        yield


async def step_identity(handle: WorkflowHandle, step: str) -> str:
    scheduled = {}
    async for e in handle.fetch_history_events():
        if e.HasField("activity_task_scheduled_event_attributes"):
            scheduled[e.event_id] = e.activity_task_scheduled_event_attributes.activity_id
        elif e.HasField("activity_task_started_event_attributes"):
            a = e.activity_task_started_event_attributes
            if scheduled[a.scheduled_event_id] == step:
                return a.identity
    raise AssertionError(f"no step {step} in {handle.id}")


def test_flows_are_pinned_when_gated_unless_they_say_otherwise():
    gated, plain = request(GATED, {}, "q").flow, request(PLAIN, {}, "q").flow
    assert versioning.behavior(gated) == "pinned" and versioning.start_override(gated) is None
    assert versioning.behavior(plain) == "auto_upgrade" and versioning.start_override(plain) is not None
    assert versioning.behavior(request({**GATED, "versioning": "auto_upgrade"}, {}, "q").flow) == "auto_upgrade"
    assert versioning.behavior(request({**PLAIN, "versioning": "pinned"}, {}, "q").flow) == "pinned"
    assert versioning.deployment_config() is None
    cfg = versioning.deployment_config("ensemble", "b1")
    assert cfg.version == WorkerDeploymentVersion("ensemble", "b1") and cfg.use_worker_versioning


async def test_parked_runs_finish_on_their_build_new_runs_start_on_the_current_one(dev_server, task_queue):
    client = dev_server.client
    deployment = f"dep-{uuid.uuid4().hex[:8]}"
    flow = gated(task_queue)
    async with workers_of_build(client, task_queue, deployment, "A"):
        await set_current(client, deployment, "A")
        parked = [await start(client, flow, task_queue, f"a{i}") for i in range(3)]
        plain_a = await start(client, PLAIN, task_queue, "plain-a")
        await plain_a.result()
        assert (await version_of(plain_a))[0] == "A"
        for h in parked:
            await wait_gate(h)
            assert await version_of(h) == ("A", VersioningBehavior.VERSIONING_BEHAVIOR_PINNED)

        async with workers_of_build(client, task_queue, deployment, "B"):
            await set_current(client, deployment, "B")
            fresh = await start(client, flow, task_queue, "b")
            await wait_gate(fresh)
            assert await version_of(fresh) == ("B", VersioningBehavior.VERSIONING_BEHAVIOR_PINNED)
            plain_b = await start(client, PLAIN, task_queue, "plain-b")
            await plain_b.result()
            assert (await version_of(plain_b))[0] == "B"

            for h in [*parked, fresh]:  # signed with alice's local key, as `starter.py approve` does
                await inbox.decide(client, h.id, GateDecision(gate="legal", decision="approve", by="alice"))
            for h in parked:
                await h.result()
                assert (await version_of(h))[0] == "A", "a pinned run moved off the build it started on"
            await fresh.result()
            assert (await version_of(fresh))[0] == "B"
            # The agent on its own queue ran on the same build as the run's workflow.
            assert [await step_identity(h, "send") for h in parked] == ["A-agents"] * 3
            assert await step_identity(fresh, "send") == "B-agents"
            assert await step_identity(plain_b, "shout") == "B-flows"
            # Which build ran each workflow task is on the record too.
            for h, build in [(parked[0], "A"), (fresh, "B")]:
                builds = {
                    e.workflow_task_completed_event_attributes.deployment_version.build_id
                    async for e in h.fetch_history_events()
                    if e.HasField("workflow_task_completed_event_attributes")
                }
                assert builds == {build}, builds


async def test_upgrade_check_catches_an_incompatible_change(dev_server, task_queue, tmp_path):
    client = dev_server.client
    flow = {**PLAIN, "name": f"plain_{uuid.uuid4().hex[:6]}"}
    async with build_worker(client, task_queue):
        await (await start(client, flow, task_queue, "closed")).result()
    async with build_worker(client, task_queue):
        parked_flow = f"gated_{uuid.uuid4().hex[:6]}"
        parked = await start(client, {**GATED, "name": parked_flow}, task_queue, "open")
        await wait_gate(parked)

    for _ in range(100):  # visibility catches up with the closed run
        ok = await check(client, list(WORKFLOWS), per_flow=5, scan=200, flows=[flow["name"]])
        if ok:
            break
        await asyncio.sleep(0.1)
    assert [(c.flow, c.open, c.ok) for c in ok] == [(flow["name"], False, True)]

    (tmp_path / "build_b.py").write_text(textwrap.dedent(CHANGED))
    env = dev_server.env()
    env["PYTHONPATH"] = f"{ROOT}:{tmp_path}"
    # the two flows this test ran (other tests' runs on this server may be encrypted with their keys)
    scope = ["--flow", flow["name"], "--flow", parked_flow]
    good = run_cli(["upgrade-check", "--sample", "3", "--scan", "500", *scope], env)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "safe to deploy" in good.stdout and f"OK        {flow['name']}: 0 open, 1 closed" in good.stdout

    bad = run_cli(["upgrade-check", "--sample", "3", "--scan", "500", *scope, "--workflows", "build_b:Reordered"], env)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    last = bad.stdout.strip().splitlines()[-1]
    assert last.startswith("upgrade blocked:") and "first: flow '" in last and "nondeterminism" in last, bad.stdout
    assert "at event" in last and "ActivityTaskScheduled" in last, last
    assert f"DIVERGED  {flow['name']}: 0 open, 1 closed run(s) replayed, 1 diverged" in bad.stdout
    assert f"run {parked.id} (open): nondeterminism" in bad.stdout

    report = json.loads(
        run_cli(["upgrade-check", "--flow", flow["name"], "--workflows", "build_b:Reordered", "--json"], env).stdout
    )
    assert report["ok"] is False and [c["run_id"] for c in report["checked"]] == [report["first_divergence"]["run_id"]]
    assert report["first_divergence"]["kind"] == "nondeterminism" and report["first_divergence"]["open"] is False


def test_upgrade_check_names_the_runs_it_cannot_read(dev_server, task_queue, tmp_path):
    """A run whose payloads are encrypted with a key the checking process lacks cannot be
    replayed: it blocks the upgrade naming the key, not as a divergence of the code."""
    import yaml

    from ensemble.runtime import codec

    name = f"sealed_{uuid.uuid4().hex[:6]}"
    flow = tmp_path / f"{name}.flow.yaml"
    flow.write_text(
        yaml.safe_dump(
            {"name": name, "imports": ["tests.agents"], "steps": [{"agent": "shout", "input": {"text": "$input.text"}}]}
        )
    )
    keyed = dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue, ENSEMBLE_CODEC_KEYS=f"k7:{codec.new_key()}")
    done = run_cli(["run", str(flow), "--input", '{"text": "hi"}', "--wait", "--json"], keyed)
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    check_cmd = ["upgrade-check", "--flow", name, "--sample", "2", "--scan", "200"]
    for _ in range(100):  # visibility catches up with the closed run
        with_key = run_cli(check_cmd, keyed)
        if "no runs to check" not in with_key.stdout:
            break
    assert with_key.returncode == 0 and "safe to deploy" in with_key.stdout, with_key.stdout + with_key.stderr

    without = run_cli(check_cmd, dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue))
    assert without.returncode == 1, without.stdout + without.stderr
    assert "Traceback" not in without.stderr
    assert f"UNREAD    {name}: 0 open, 1 closed run(s) replayed, 0 diverged, 1 not readable here" in without.stdout
    last = without.stdout.strip().splitlines()[-1]
    assert last.startswith("upgrade blocked: 0 of 1 histories diverge, 1 cannot be read here; first:"), last
    assert f"run {run_id} (closed): not replayed" in last and "key 'k7'" in last and codec.KEYS_ENV in last, last
    report = json.loads(run_cli([*check_cmd, "--json"], dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue)).stdout)
    assert report["ok"] is False and report["first_divergence"]["kind"] == "unreadable"

    wrong = run_cli(
        check_cmd, dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue, ENSEMBLE_CODEC_KEYS=f"k8:{codec.new_key()}")
    )
    assert wrong.returncode == 1 and "key 'k7', which this process does not have" in wrong.stdout, wrong.stdout
