"""Replay: recorded histories of bundled flows replay against the current workflow code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from ensemble.runtime.converter import data_converter
from ensemble.workflows.flow import EnsembleFlow
from tests.conftest import running_worker
from tests.flowkit import request, start
from tests.histories.refresh import golden_id

HISTORIES = sorted((Path(__file__).resolve().parents[1] / "histories").glob("*.json"))


def replayer() -> Replayer:
    return Replayer(workflows=[EnsembleFlow], data_converter=data_converter())


def test_golden_histories_exist_for_bundled_flows():
    from ensemble.authoring.flows import EXAMPLES_DIR, all_flows

    bundled = {f.spec.name for f in all_flows() if f.source and EXAMPLES_DIR in f.source.parents}
    assert bundled <= {p.stem for p in HISTORIES}


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_golden_history_replays(path):
    history = WorkflowHistory.from_json(golden_id(path.stem), json.loads(path.read_text()))
    result = await replayer().replay_workflow(history)
    assert result.replay_failure is None


async def test_fresh_document_pipeline_history_replays_and_a_divergent_one_fails(dev_server, task_queue):
    text = (Path(__file__).resolve().parents[2] / "examples/document_pipeline/documents/contract.txt").read_text()
    from ensemble.authoring.flows import find_flow

    flow = find_flow("document_pipeline")
    async with running_worker(dev_server.client, task_queue):
        handle = await start(dev_server.client, request(flow.spec.model_dump(), {"text": text}, task_queue))
        await handle.result()
    history = await handle.fetch_history()
    assert (await replayer().replay_workflow(history)).replay_failure is None

    # The same history against a changed flow spec: the input decides the commands, so tamper with
    # the recorded input (swap two steps) and replay must report nondeterminism.
    data = json.loads(history.to_json())
    attrs = data["events"][0]["workflowExecutionStartedEventAttributes"]
    payload = attrs["input"]["payloads"][0]
    import base64

    req = json.loads(base64.b64decode(payload["data"]))
    req["flow"]["steps"][0], req["flow"]["steps"][1] = req["flow"]["steps"][1], req["flow"]["steps"][0]
    req["flow"]["steps"][0]["input"] = {"text": "$input.text", "fields": None}
    payload["data"] = base64.b64encode(json.dumps(req).encode()).decode()
    changed = WorkflowHistory.from_json(history.workflow_id, data)
    result = await replayer().replay_workflow(changed, raise_on_replay_failure=False)
    assert result.replay_failure is not None
    assert "nondetermin" in str(result.replay_failure).lower()
