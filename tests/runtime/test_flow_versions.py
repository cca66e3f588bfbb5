"""Runs that name their flow's version (ENSEMBLE_FLOW_REFS=on; ensemble.runtime.flow_versions) on
the dev server: the version is recorded once, a worker that was not deployed with the flow reads
it from the record, and every reader (status, audit, history --out, replay) reads the run as if it
carried its flow. The request's own wire form: tests/spec/test_versions.py."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
import uuid

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus

from ensemble.client import EnsembleClient
from ensemble.runs.history import read_history
from ensemble.runtime import flow_versions
from ensemble.spec import versions
from tests.conftest import ROOT, run_cli, running_worker

FLOW = """
name: {name}
description: a flow deployed where its runs start, not where they run
imports: [ensemble.examples.hello.agents]
steps:
  - agent: greeter
    input: {{name: $input.name}}
    output: greeting
output: $greeting.text
"""


def start_input(history) -> dict:
    payload = history.events[0].workflow_execution_started_event_attributes.input.payloads[0]
    return json.loads(payload.data)


def exported_start_input(path) -> dict:
    event = json.loads(path.read_text())["events"][0]
    data = event["workflowExecutionStartedEventAttributes"]["input"]["payloads"][0]["data"]
    return json.loads(base64.b64decode(data))


@pytest.fixture
def deployed_here(tmp_path, monkeypatch):
    """A flow found by name in this process (ENSEMBLE_FLOW_PATH) and nowhere else."""
    name = f"versioned_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "flows" / name
    folder.mkdir(parents=True)
    (folder / "flow.yaml").write_text(FLOW.format(name=name))
    monkeypatch.setenv("ENSEMBLE_FLOW_PATH", str(tmp_path / "flows"))
    monkeypatch.setenv(flow_versions.ENV, "on")
    return name, tmp_path / "flows"


async def test_a_run_names_its_version_and_a_worker_without_the_flow_reads_it_from_the_record(
    dev_server, task_queue, deployed_here, tmp_path, monkeypatch
):
    name, flows = deployed_here
    monkeypatch.setenv("ENSEMBLE_TASK_QUEUE", task_queue)
    client = dev_server.client
    started = await EnsembleClient(client).start(name, {"name": "Ada"}, run_id=f"{name}-1")
    handle = client.get_workflow_handle(started.run_id)
    # more runs of the version waiting for the worker: they meet it at once, and one read serves them
    others = [await EnsembleClient(client).start(name, {"name": f"Bo{i}"}, run_id=f"{name}-more-{i}") for i in range(4)]

    recorded = start_input(await handle.fetch_history())
    assert recorded[versions.REF].startswith(f"{name}@") and "flow" not in recorded and "agents" not in recorded
    digest = versions.parse_ref(recorded[versions.REF])[1]
    record = await client.get_workflow_handle(versions.RECORD_PREFIX + digest).describe()
    assert record.status == WorkflowExecutionStatus.RUNNING and record.workflow_type == flow_versions.RECORD_TYPE

    # a worker process deployed without the flow file: it has the agents' code, not this flow
    worker = subprocess.Popen(
        [sys.executable, "worker.py"],
        cwd=ROOT,
        env=dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue, ENSEMBLE_FLOWS="ensemble.examples.hello.agents"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        outcome = await asyncio.wait_for(handle.result(), 60)
        more = await asyncio.wait_for(
            asyncio.gather(*(client.get_workflow_handle(o.run_id).result() for o in others)), 60
        )
    finally:
        worker.terminate()
        _, err = worker.communicate(timeout=30)
    assert outcome["output"] == "Hello, Ada!", outcome
    assert [m["output"] for m in more] == [f"Hello, Bo{i}!" for i in range(4)]
    assert b"Traceback" not in err, err.decode()[-2000:]
    # the worker was not deployed with the version: it read the record while the tasks waited
    for run_id in [started.run_id, *(o.run_id for o in others)]:
        history = await client.get_workflow_handle(run_id).fetch_history()
        assert not [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]

    # a reader that does not know the version reads it from the record
    kept_body = versions._known.pop(digest)
    try:
        folded = await read_history(client, started.run_id)
        assert folded.request is not None and folded.request.flow.name == name
        assert [a for a in folded.request.agents] == ["greeter"]
    finally:
        versions._known.setdefault(digest, kept_body)

    env = dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue)  # CLI processes without the flow file
    audit = run_cli(["audit", started.run_id, "--json"], env)
    assert audit.returncode == 0, audit.stderr
    report = json.loads(audit.stdout)
    assert report["flow"] == name  # read from the run's request, so from the record
    assert report["flow_version"] == f"{name}@{digest}"
    status = run_cli(["status", started.run_id, "--json"], env)
    assert json.loads(status.stdout)["flow_version"] == f"{name}@{digest}", status.stdout + status.stderr
    listed = json.loads(run_cli(["flows", "--json"], dev_server.env(ENSEMBLE_FLOW_PATH=str(flows))).stdout)
    assert [f["version"] for f in listed if f["name"] == name] == [digest]  # where it is deployed

    exported = tmp_path / "run.json"
    done = run_cli(["history", started.run_id, "--out", str(exported)], env)
    assert done.returncode == 0, done.stderr
    inlined = exported_start_input(exported)
    assert versions.REF not in inlined and inlined["flow"]["name"] == name  # the file is enough on its own
    replayed = run_cli(["replay", str(exported)], env)
    assert replayed.returncode == 0 and replayed.stdout.startswith("OK"), replayed.stdout + replayed.stderr

    kept = tmp_path / "kept.json"
    assert run_cli(["history", started.run_id, "--out", str(kept), "--keep-references"], env).returncode == 0
    assert versions.REF in exported_start_input(kept)
    unread = run_cli(["replay", str(kept)], env)  # a file, no flow deployed: said, not guessed
    assert unread.returncode == 1 and "UNREAD" in unread.stdout and digest in unread.stdout, unread.stdout
    no_audit = run_cli(["audit", str(kept)], env)
    assert no_audit.returncode != 0 and f"names flow version {name}@{digest}" in no_audit.stderr, no_audit.stderr
    assert len(no_audit.stderr.strip().splitlines()) == 1, no_audit.stderr
    deployed = dev_server.env(ENSEMBLE_FLOW_PATH=str(flows))  # where the flow is deployed, the file reads
    with_flow = run_cli(["replay", str(kept)], deployed)
    assert with_flow.returncode == 0, with_flow.stdout + with_flow.stderr
    assert json.loads(run_cli(["audit", str(kept), "--json"], deployed).stdout)["flow"] == name


async def test_a_terminated_record_is_written_again_by_the_next_start(dev_server, task_queue, deployed_here):
    name, flows = deployed_here
    client = dev_server.client
    first = await EnsembleClient(client).start(name, {"name": "Ada"}, run_id=f"{name}-a")
    digest = versions.parse_ref(
        start_input(await client.get_workflow_handle(first.run_id).fetch_history())[versions.REF]
    )[1]
    record = client.get_workflow_handle(versions.RECORD_PREFIX + digest)
    await record.terminate("by hand")
    started = run_cli(
        ["run", name, "--input", '{"name": "Bo"}', "--id", f"{name}-b"],
        dev_server.env(ENSEMBLE_FLOW_PATH=str(flows), ENSEMBLE_FLOW_REFS="on", ENSEMBLE_TASK_QUEUE=task_queue),
    )
    assert started.returncode == 0, started.stderr
    assert (await record.describe()).status == WorkflowExecutionStatus.RUNNING
    for run_id in (first.run_id, f"{name}-b"):
        await client.get_workflow_handle(run_id).terminate("not run here")


async def test_off_and_flows_from_a_file_carry_the_flow(dev_server, task_queue, deployed_here, monkeypatch):
    name, flows = deployed_here
    client = dev_server.client
    from_file = await EnsembleClient(client).start(str(flows / name / "flow.yaml"), {"name": "Ada"})
    monkeypatch.setenv(flow_versions.ENV, "off")
    by_name_off = await EnsembleClient(client).start(name, {"name": "Ada"})
    for run in (from_file, by_name_off):
        recorded = start_input(await client.get_workflow_handle(run.run_id).fetch_history())
        assert versions.REF not in recorded and recorded["flow"]["name"] == name
        await client.get_workflow_handle(run.run_id).terminate("not run here")
    monkeypatch.setenv(flow_versions.ENV, "maybe")
    bad = run_cli(
        ["run", name, "--input", '{"name": "Ada"}'],
        dev_server.env(ENSEMBLE_FLOW_PATH=str(flows), ENSEMBLE_FLOW_REFS="maybe"),
    )
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: ENSEMBLE_FLOW_REFS='maybe': use on or off"
    ], bad.stderr


async def test_a_record_read_slower_than_the_task_waits_fails_that_task_once(
    dev_server, task_queue, deployed_here, monkeypatch
):
    """The fallback where the read takes longer than a workflow task may wait: the task fails once,
    its cause names the version, and the retry runs with the version read meanwhile."""
    name, _ = deployed_here
    monkeypatch.setenv("ENSEMBLE_TASK_QUEUE", task_queue)
    client = dev_server.client
    started = await EnsembleClient(client).start(name, {"name": "Ada"}, run_id=f"{name}-slow")
    handle = client.get_workflow_handle(started.run_id)
    digest = versions.parse_ref(start_input(await handle.fetch_history())[versions.REF])[1]
    monkeypatch.delenv("ENSEMBLE_FLOW_PATH")  # the worker below is not deployed with the flow
    kept = versions._known.pop(digest)  # and this process (it) does not know the version
    monkeypatch.setattr(flow_versions.Watch, "WAIT_S", 0.0)
    try:
        async with running_worker(client, task_queue):
            outcome = await asyncio.wait_for(handle.result(), 60)
    finally:
        versions._known.setdefault(digest, kept)
    assert outcome["output"] == "Hello, Ada!", outcome
    history = await handle.fetch_history()
    failed = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
    assert len(failed) == 1
    assert digest in str(failed[0].workflow_task_failed_event_attributes.failure)  # its cause says which


async def test_workers_in_one_process_share_the_wait_for_a_slow_record(monkeypatch):
    """Each worker in a process watches for versions; however many there are, a workflow task waits
    for a slow read at most WAIT_S in all, within the SDK's 2-second deadlock detection."""

    async def slow_fetch(client, ref):
        await asyncio.sleep(30)

    monkeypatch.setattr(flow_versions, "fetch", slow_fetch)
    watches = [flow_versions.Watch(None), flow_versions.Watch(None)]
    for watch in watches:
        watch.start()
    ref = versions.ref("nowhere", "A" * 24)
    try:

        def read_in_a_workflow_thread() -> float:
            began = time.monotonic()
            with pytest.raises(versions.VersionUnknown):
                versions.read({versions.REF: ref, "input": None})
            return time.monotonic() - began

        waited = await asyncio.to_thread(read_in_a_workflow_thread)
    finally:
        for watch in watches:
            watch.stop()
        for task in asyncio.all_tasks():  # the reads still sleeping
            if getattr(task.get_coro(), "__qualname__", "").endswith("_fetch_once"):
                task.cancel()
    assert flow_versions.Watch.WAIT_S * 0.9 <= waited < 2.0, waited
