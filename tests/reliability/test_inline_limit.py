"""Every run ends without a payload store too: a value the workflow itself would send over Temporal's
2 MB limit (a step's input built from the state, the run's outcome) fails the run at once with its
reason, into the dead-letter queue, after its compensations; it used to fail every workflow task
and leave the run `running` forever."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError

from ensemble.runs.dlq import dead_letter, dead_letters, redrive
from ensemble.runs.history import read_history
from ensemble.runs.view import describe_run
from ensemble.runtime.launch import start_request
from ensemble.spec import FlowOutcome, protocol
from tests.conftest import DevServer, running_worker
from tests.flowkit import request

pytestmark = pytest.mark.reliability

UNDO = "    compensate: rel_measure\n    compensate_input: {tag: undo-first}\n"


def flow(name: str, mb: float, last: str, output: str) -> str:
    """Two steps that each return `mb` MiB (the first one undone by a compensation), then `last`."""
    return (
        f"name: {name}\nimports: [tests.reliability.agents, tests.chat_agents]\nsteps:\n"
        f"  - name: first\n    agent: rel_big_output\n    input: {{mb: {mb}}}\n    output: a\n{UNDO}"
        f"  - name: second\n    agent: rel_big_output\n    input: {{mb: {mb}}}\n    output: b\n"
        f"{last}output: {output}\n"
    )


WHOLE_STATE = "  - name: whole\n    agent: rel_measure\n    input: $\n    output: m\n"
CHAT = "  - name: talk\n    chat:\n      participants: [yes_man, stubborn]\n      topic: {x: $a.blob, y: $b.blob}\n"
GATE = "  - name: review\n    gate:\n      approvers: [alice]\n      show: {x: $a.blob, y: $b.blob}\n"


def without_store(client: Client) -> Client:
    """A client (and so a worker built on it) whose data converter has no payload store, as on a
    cluster where none is configured: every value travels inline."""
    converter = dataclasses.replace(client.data_converter, external_storage=None)
    return Client(client.service_client, namespace=client.namespace, data_converter=converter)


async def run_without_store(dev_server: DevServer, task_queue: str, text: str, timeout_s: float = 60):
    client = without_store(dev_server.client)
    async with running_worker(client, task_queue):
        run_id = await start_request(client, request(text, {}, task_queue), f"inl-{uuid.uuid4().hex[:8]}", summary="t")
        handle = client.get_workflow_handle(run_id, result_type=FlowOutcome)
        try:  # bounded: before the guard, such a run never ended (the status below is then `running`)
            await asyncio.wait_for(handle.result(), timeout_s)
        except (WorkflowFailureError, asyncio.TimeoutError):
            pass
    return client, run_id, await describe_run(client, run_id), await handle.fetch_history()


@pytest.mark.parametrize(
    ("case", "last", "output", "failed_step", "what"),
    [
        ("step-input", WHOLE_STATE, "{chars: $m.chars}", "whole", "step 'whole' (agent 'rel_measure') not started"),
        ("outcome", "", "{blob: $b.blob}", None, "the run cannot complete: its outcome (output and state) is"),
        ("gate", GATE, "{n: 1}", None, "gate 'review' not opened: what it shows (`show:`) is 1.20 MiB"),
        ("chat", CHAT, "{n: 1}", "talk", "step 'talk' (group chat) not started: its topic is 1.20 MiB"),
    ],
    ids=["step-input", "outcome", "gate", "chat"],
)
async def test_a_value_over_the_limit_fails_the_run_with_its_reason(
    dev_server: DevServer,
    task_queue: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    figure,
    case: str,
    last: str,
    output: str,
    failed_step: str | None,
    what: str,
) -> None:
    monkeypatch.setenv("ENSEMBLE_PAYLOAD_STORE", "off")  # the agents' output limit too
    record = tmp_path / "record"
    monkeypatch.setenv("RELIABILITY_RECORD", str(record))
    name = f"inline-{case}-{uuid.uuid4().hex[:6]}"
    # 0.6 MiB + 0.6 MiB: each output fits inline (1 MiB, limit.blobSize.error as Ensemble sets it),
    # the whole state (or the outcome) does not.
    client, run_id, view, history = await run_without_store(dev_server, task_queue, flow(name, 0.6, last, output))
    assert view.status == "failed", view
    assert view.error and what in view.error, view.error
    assert "ENSEMBLE_PAYLOAD_STORE" in view.error and "MiB" in view.error, view.error
    wft_failed = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
    assert not wft_failed, "a workflow task failed: the value was sent"
    recorded = (await read_history(client, run_id)).request
    assert recorded is not None and recorded.inline_limit == protocol.INLINE_VALUE_LIMIT
    assert record.read_text().splitlines() == ["undo-first"]  # the compensation ran, once
    letter = await dead_letter(client, run_id)
    assert letter.failed_step == failed_step and what in (letter.error or ""), letter
    assert letter.agent == ("rel_measure" if case == "step-input" else None), letter  # the agent never started
    assert [c["status"] for c in letter.compensations] == ["completed"], letter.compensations
    assert run_id in [d.run_id for d in await dead_letters(client, flow=name)]
    figure(f"{case} over the limit without a store: reason", view.error[:160])
    if case == "step-input":  # with a payload store configured, a redrive completes from the failed step
        new_id, _ = await redrive(dev_server.client, run_id)
        async with running_worker(dev_server.client, task_queue):
            outcome = await asyncio.wait_for(dev_server.client.get_workflow_handle(new_id).result(), 60)
        assert outcome["output"] == {"chars": 0}
        redriven = await describe_run(dev_server.client, new_id)
        # `first` was undone by its compensation, so it runs again; `second` is reused
        steps = {s.name: s.status for s in redriven.steps}
        assert steps == {"first": "completed", "second": "reused", "whole": "completed"}, redriven.steps


async def test_a_chat_whose_transcript_outgrows_the_limit_fails_with_its_reason(
    dev_server: DevServer, task_queue: str, monkeypatch: pytest.MonkeyPatch, figure
) -> None:
    """A chat of 400 KiB messages without a payload store: each turn's input (one message) and the
    continue-as-new after 4 turns (two long messages) fit inline; the record of 6 turns (three long
    messages) does not. Before the guard the chat's completion failed every workflow task and the
    flow run waited on it forever."""
    monkeypatch.setenv("ENSEMBLE_PAYLOAD_STORE", "off")
    name = f"inline-chat-{uuid.uuid4().hex[:6]}"
    text = (
        f"name: {name}\nimports: [tests.reliability.agents, tests.chat_agents]\nsteps:\n"
        "  - name: talk\n    chat:\n      participants: [rel_talker, yes_man]\n      topic: {kib: 400}\n"
        "      window: 1\n      turns_per_run: 4\n      max_turns: 6\n"
    )
    client, run_id, view, history = await run_without_store(dev_server, task_queue, text)
    assert view.status == "failed", view
    assert view.error and "chat 'talk' at turn 6: its record (the whole transcript) is" in view.error, view.error
    assert "ENSEMBLE_PAYLOAD_STORE" in view.error and "`window`" in view.error, view.error
    chat_runs = [ex async for ex in client.list_workflows(f'WorkflowId = "{run_id}/talk"')]
    assert len(chat_runs) == 2  # it continued as new once, with a transcript that fit
    for ex in chat_runs:
        events = [e async for e in client.get_workflow_handle(ex.id, run_id=ex.run_id).fetch_history_events()]
        assert not [e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
    assert run_id in [d.run_id for d in await dead_letters(client, flow=name)]
    figure("chat transcript over the limit without a store: reason", view.error[:160])


async def test_values_under_the_limit_still_run_without_a_store(
    dev_server: DevServer, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENSEMBLE_PAYLOAD_STORE", "off")
    _, run_id, view, _ = await run_without_store(
        dev_server, task_queue, flow(f"inline-fits-{uuid.uuid4().hex[:6]}", 0.3, WHOLE_STATE, "{chars: $m.chars}")
    )
    assert view.status == "completed", view.error
    # With a payload store (the embedded server's), the run carries no limit.
    recorded = (await read_history(dev_server.client, run_id)).request
    assert recorded is not None and recorded.inline_limit == protocol.INLINE_VALUE_LIMIT
    req = request(flow("stored", 0.1, "", "{n: 1}"), {}, task_queue)
    stored_id = await start_request(dev_server.client, req, f"inl-{uuid.uuid4().hex[:8]}", summary="t")
    stored = (await read_history(dev_server.client, stored_id)).request
    assert stored is not None and stored.inline_limit is None
    await dev_server.client.get_workflow_handle(stored_id).terminate("not run: only its request is checked")


FAN_OUT = """name: inline-fan-{u}
imports: [tests.reliability.agents]
steps:
  - {{name: first, agent: rel_big_output, input: {{mb: 0.9}}, output: a}}
  - name: fan
    parallel:
      branches:
        - {{name: x, agent: rel_measure, input: {{text: $a.blob}}}}
        - {{name: y, agent: rel_measure, input: {{text: $a.blob}}}}
        - {{name: z, agent: rel_measure, input: {{text: $a.blob}}}}
        - {{name: v, agent: rel_measure, input: {{text: $a.blob}}}}
        - {{name: w, agent: rel_measure, input: {{text: $a.blob}}}}
output: {{n: 1}}
"""


async def test_parallel_inputs_over_one_message_go_out_in_turns(
    dev_server: DevServer, task_queue: str, monkeypatch: pytest.MonkeyPatch, figure
) -> None:
    """Five branches each sending 0.9 MiB: each fits, together they are over the 4 MiB of one gRPC
    message, which made Temporal terminate the run; the fourth and fifth now wait for a branch to end."""
    monkeypatch.setenv("ENSEMBLE_PAYLOAD_STORE", "off")
    _, _, view, history = await run_without_store(dev_server, task_queue, FAN_OUT.format(u=uuid.uuid4().hex[:6]))
    assert view.status == "completed", (view.status, view.error)
    assert [s.output for s in view.steps if s.name.startswith("fan.")] == [{"chars": int(0.9 * 2**20)}] * 5
    wft_failed = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
    assert not wft_failed, "a workflow task failed"
    figure("5 x 0.9 MiB branch inputs without a store: history bytes", len(history.to_json().encode()))


COMPENSATION = """name: inline-undo-{u}
imports: [tests.reliability.agents]
steps:
  - {{name: first, agent: rel_big_output, input: {{mb: 0.6}}, output: a}}
  - {{name: second, agent: rel_big_output, input: {{mb: 0.6, text: $a.blob}}, output: b, compensate: rel_measure}}
  - {{name: third, agent: rel_big_output, input: {{mb: 0.1}}, output: c, compensate: rel_measure,
      compensate_input: {{tag: undo-third}}}}
  - {{name: boom, agent: rel_unserialisable, input: {{}}}}
"""


async def test_a_compensation_over_the_limit_is_not_sent_and_the_others_run(
    dev_server: DevServer,
    task_queue: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`second`'s compensation gets its input and output by default: 1.2 MiB, not sent; the
    worker's log says so, the run fails with its own reason and `third` is still undone."""
    monkeypatch.setenv("ENSEMBLE_PAYLOAD_STORE", "off")
    record = tmp_path / "record"
    monkeypatch.setenv("RELIABILITY_RECORD", str(record))
    caplog.set_level(logging.WARNING)
    client, run_id, view, history = await run_without_store(
        dev_server, task_queue, COMPENSATION.format(u=uuid.uuid4().hex[:6])
    )
    assert view.status == "failed" and "cannot be sent as JSON" in (view.error or ""), view.error
    assert record.read_text().splitlines() == ["undo-third"]
    warned = [r.getMessage() for r in caplog.records if "compensation of step 'second'" in r.getMessage()]
    assert warned and "not started: its input is 1.20 MiB" in warned[0], warned
    wft_failed = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
    assert not wft_failed, "a workflow task failed: the compensation's input was sent"
