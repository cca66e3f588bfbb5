"""`starter.py payloads prune`: the payload store loses only the values no run refers to any more
(after the server deleted a run: retention or an erasure request), never a value a run still holds,
nor one written within the grace period."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path

from google.protobuf.duration_pb2 import Duration
from temporalio.api.common.v1 import Payload, WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest, RegisterNamespaceRequest
from temporalio.converter import StorageDriverStoreContext, StorageDriverWorkflowInfo
from temporalio.service import RPCError, RPCStatusCode

from ensemble.runs.prune import _delete_if_unused
from ensemble.runtime.payloads import NAMESPACES_DIR, FileStorageDriver, stored_values
from tests import agents
from tests.conftest import run_cli, running_worker
from tests.flowkit import request, start
from tests.trust.test_proven_decisions import parked

TWO_DAYS_AGO = time.time() - 2 * 86400


def age(paths: list[Path]) -> None:
    for path in paths:
        os.utime(path, (TWO_DAYS_AGO, TWO_DAYS_AGO))


async def deleted(dev_server, handle) -> None:
    """Delete a run from the server (as `temporal workflow delete` does for an erasure request, or
    retention later) and wait until it is gone."""
    run_id = (await handle.describe()).run_id
    await dev_server.client.workflow_service.delete_workflow_execution(
        DeleteWorkflowExecutionRequest(
            namespace=dev_server.client.namespace,
            workflow_execution=WorkflowExecution(workflow_id=handle.id, run_id=run_id),
        )
    )
    for _ in range(200):
        try:
            await handle.describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return
            raise
        await asyncio.sleep(0.05)
    raise AssertionError("the run was never deleted")


async def prune(env, *args: str) -> dict:
    out = await asyncio.to_thread(run_cli, ["payloads", "prune", *args, "--json"], env)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


async def test_prune_deletes_only_the_values_no_run_refers_to(dev_server, task_queue):
    env = dev_server.env()
    driver = FileStorageDriver(dev_server.home / "payloads")
    marker = uuid.uuid4().hex
    async with running_worker(dev_server.client, task_queue):
        handle, _ = await parked(dev_server, task_queue, text=f"{marker} " + "clause " * 50_000)  # 350 KB: stored
        events = (await handle.fetch_history()).events
        ours = sorted({claim["sha256"] for _, _, claim in stored_values(events)})
        assert ours, "the parked run's values went to the store"
        orphan = driver._write(f"written for a run that never started {marker}".encode())
        fresh = driver._write(f"written a moment ago {marker}".encode())
        age([driver._path(d) for d in [*ours, orphan]])  # old, but the open run refers to its values

        looked = await prune(env, "--dry-run")
        assert looked["dry_run"] is True and looked["deleted"] >= 1
        assert driver._path(orphan).exists()

        swept = await prune(env, "--older-than", "1h")
        assert swept["namespaces"] == ["default"] and swept["executions"] >= 1
        assert not driver._path(orphan).exists()
        assert driver._path(fresh).exists(), "written within the grace period: kept"
        assert all(driver._path(d).exists() for d in ours), "a value an open run refers to is never deleted"
        shown = await asyncio.to_thread(run_cli, ["status", handle.id, "--json"], env)
        assert shown.returncode == 0, shown.stderr

        await deleted(dev_server, handle)
    age([driver._path(d) for d in ours])
    swept = await prune(env, "--older-than", "1h")
    assert not any(driver._path(d).exists() for d in ours), "the deleted run's values went with it"
    assert swept["deleted"] >= len(ours)


async def test_prune_keeps_the_values_an_open_runs_heartbeat_holds(dev_server, task_queue):
    # A running agent's last heartbeat (a model loop's transcript) is in no history event until the
    # attempt ends: only the run's description holds it.
    env = dev_server.env()
    driver = FileStorageDriver(dev_server.home / "payloads")
    flow = "name: beating\nimports: [tests.agents]\nsteps:\n  - agent: beating\n    input: {progress: $input.p}\n"
    agents.BEAT_RELEASE.clear()
    async with running_worker(dev_server.client, task_queue):
        handle = await start(dev_server.client, request(flow, {"p": uuid.uuid4().hex + " turn" * 70_000}, task_queue))
        for _ in range(400):
            description = (await handle.describe()).raw_description
            if any(p.heartbeat_details.payloads for p in description.pending_activities):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the agent never heartbeat")
        in_history = {c["sha256"] for _, _, c in stored_values((await handle.fetch_history()).events)}
        beat = {c["sha256"] for _, _, c in stored_values([description])} - in_history
        assert beat, "the heartbeat's 350 KB went to the store, and no history event refers to it yet"
        age([p for p in driver.root.rglob("*") if p.is_file() and not p.parent.name.startswith(".")])
        await prune(env, "--older-than", "1h")
        assert all(driver._path(d).exists() for d in beat), "an open run's heartbeat value was deleted"
        agents.BEAT_RELEASE.set()
        assert (await handle.result()).output["beating"] == {"released": True}


async def test_prune_refuses_in_one_line_and_walks_every_namespace_of_the_store(dev_server):
    env = dev_server.env()
    driver = FileStorageDriver(dev_server.home / "payloads")
    orphan = driver._write(f"an orphan {uuid.uuid4().hex}".encode())
    age([driver._path(orphan)])
    other = driver.root / NAMESPACES_DIR / "billing"
    other.parent.mkdir(exist_ok=True)
    other.touch()
    try:
        cases = [
            (["--older-than", "10s"], env, "at least 60s"),
            (["--older-than", "soon"], env, "use a duration"),
            ([], {**env, "ENSEMBLE_PAYLOAD_STORE": "off"}, "no payload store is configured"),
            ([], env, "also holds values written in namespace(s) billing"),
        ]
        for args, case_env, says in cases:
            out = await asyncio.to_thread(run_cli, ["payloads", "prune", *args], case_env)
            assert out.returncode == 2, (args, out.stdout, out.stderr)
            [line] = out.stderr.strip().splitlines()
            assert says in line, line
        assert driver._path(orphan).exists()
        try:
            await dev_server.client.workflow_service.register_namespace(
                RegisterNamespaceRequest(
                    namespace="billing", workflow_execution_retention_period=Duration(seconds=86400)
                )
            )
        except RPCError as err:
            if err.status != RPCStatusCode.ALREADY_EXISTS:
                raise
        both = ["payloads", "prune", "--namespace", "default", "--namespace", "billing", "--older-than", "1h", "--json"]
        for _ in range(60):  # a new namespace is served once the frontend's namespace cache has it
            out = await asyncio.to_thread(run_cli, both, env)
            if out.returncode == 0 or "not found" not in out.stderr.lower():
                break
            await asyncio.sleep(1)
        assert out.returncode == 0, out.stdout + out.stderr
        assert json.loads(out.stdout)["namespaces"] == ["billing", "default"]
        assert not driver._path(orphan).exists()
        unknown = ["payloads", "prune", "--namespace", "default", "--namespace", "billing", "--namespace", "nosuch"]
        out = await asyncio.to_thread(run_cli, unknown, env)
        assert out.returncode == 1, (out.stdout, out.stderr)
        [line] = out.stderr.strip().splitlines()
        assert "namespace 'nosuch': cannot list its runs" in line and "nothing deleted" in line, line
    finally:
        other.unlink()


def test_a_value_used_again_as_it_is_pruned_is_put_back(tmp_path):
    driver = FileStorageDriver(tmp_path)
    digest = driver._write(b"a value")
    path = driver._path(digest)
    age([path])
    cutoff = time.time() - 3600
    os.utime(path)  # a writer stored the same value again before the rename
    _delete_if_unused(path, cutoff)
    assert path.exists()
    age([path])
    _delete_if_unused(path, cutoff)
    assert not path.exists()
    assert driver._write(b"a value") == digest and path.exists(), "a pruned value is written again"


def test_the_store_records_each_namespace_that_writes_to_it(tmp_path):
    driver = FileStorageDriver(tmp_path)
    for namespace in ("default", "team/a", "ReplayNamespace"):  # the last: a replay, not a user of the store
        context = StorageDriverStoreContext(target=StorageDriverWorkflowInfo(namespace=namespace, id="r"))
        asyncio.run(driver.store(context, [Payload(data=namespace.encode())]))
    assert driver.namespaces() == {"default", "team/a"}
