"""The group chat pattern on a real dev server: speaker order, selectors, every termination rule,
failures, and a chat that continues as new without losing its transcript."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle

from ensemble.runs.view import describe_run
from tests.conftest import running_worker
from tests.flowkit import request, run_to_end, start

TOPIC = {"item": "$input.item", "list_price": "$input.list_price"}
LAMP = {"item": "lamp", "list_price": 100}
# seller and buyer on a 100 lamp: asks 100, 90, 80, 70 and offers 50, 60, 70, then the buyer approves.
NEGOTIATION = [
    "The lamp is yours for 100.",
    "I offer 50.",
    "The lamp is yours for 90.",
    "I offer 60.",
    "The lamp is yours for 80.",
    "I offer 70.",
    "The lamp is yours for 70.",
    "APPROVED at 70.",
]


def flow(**chat: Any) -> dict:
    return {
        "name": "chat",
        "imports": ["tests.chat_agents", "tests.agents"],
        "steps": [{"name": "talk", "chat": {"topic": TOPIC, **chat}}],
    }


def run(client, task_queue, data, run_input=LAMP, **worker):
    return run_to_end(client, task_queue, data, run_input, **worker)


async def chat_runs(client: Client, flow_handle: WorkflowHandle) -> list[list[HistoryEvent]]:
    """The histories of every run of the flow's chat child workflow, first run first."""
    started = [
        e
        async for e in flow_handle.fetch_history_events()
        if e.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED
    ]
    [event] = started
    execution = event.child_workflow_execution_started_event_attributes.workflow_execution
    runs, run_id = [], execution.run_id
    while run_id:
        events = [
            e async for e in client.get_workflow_handle(execution.workflow_id, run_id=run_id).fetch_history_events()
        ]
        runs.append(events)
        last = events[-1]
        continued = last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
        run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id if continued else ""
    return runs


def activity_ids(events: list[HistoryEvent]) -> list[str]:
    return [
        e.activity_task_scheduled_event_attributes.activity_id
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]


def speakers(record: dict) -> list[str]:
    return [m["speaker"] for m in record["transcript"]]


async def test_round_robin_takes_turns_in_declared_order(dev_server, task_queue):
    handle, out = await run(
        dev_server.client, task_queue, flow(participants=["seller", "buyer", "yes_man"], max_turns=7)
    )
    record = out.output["talk"]
    assert speakers(record) == ["seller", "buyer", "yes_man", "seller", "buyer", "yes_man", "seller"]
    assert [m["turn"] for m in record["transcript"]] == [1, 2, 3, 4, 5, 6, 7]
    assert record["ended_by"] == "max_turns" and record["turns"] == 7 and record["decision"] is None
    assert record["transcript"][2] == {
        "turn": 3,
        "speaker": "yes_man",
        "message": "I agree (2 messages seen).",
        "vote": "approve",
    }
    assert out.steps == ["talk"]
    [chat] = await chat_runs(dev_server.client, handle)
    assert activity_ids(chat) == [f"talk.turn{n}" for n in range(1, 8)]


async def test_keyword_ends_the_chat_on_the_turn_it_appears(dev_server, task_queue):
    data = flow(participants=["seller", "buyer"], until={"keyword": "APPROVED"}, max_turns=20)
    _, out = await run(dev_server.client, task_queue, data, max_cached_workflows=0)  # replays on every task
    record = out.output["talk"]
    assert [m["message"] for m in record["transcript"]] == NEGOTIATION
    assert record["ended_by"] == "keyword" and record["turns"] == 8
    assert record["final_message"] == "APPROVED at 70." and record["decision"] is None
    assert speakers(record) == ["seller", "buyer"] * 4


async def test_consensus_ends_when_every_latest_vote_agrees(dev_server, task_queue):
    data = flow(participants=["seller", "buyer"], until={"consensus": True, "keyword": "APPROVED"}, max_turns=20)
    _, out = await run(dev_server.client, task_queue, data)
    record = out.output["talk"]
    # After turn 7 the seller's ask and the buyer's offer are both 70: consensus before the keyword.
    assert record["ended_by"] == "consensus" and record["turns"] == 7 and record["decision"] == 70
    assert record["final_message"] == "The lamp is yours for 70."
    assert [m["vote"] for m in record["transcript"]] == [100, 50, 90, 60, 80, 70, 70]


async def test_max_turns_bounds_a_chat_that_never_agrees(dev_server, task_queue):
    data = flow(participants=["yes_man", "stubborn"], until={"consensus": True}, max_turns=5, window=2)
    _, out = await run(dev_server.client, task_queue, data)
    record = out.output["talk"]
    assert record["ended_by"] == "max_turns" and record["turns"] == 5 and record["decision"] is None
    assert record["final_message"] == "I agree (2 messages seen)."
    # Each turn sees at most `window` messages of the transcript.
    assert [m["message"] for m in record["transcript"] if m["speaker"] == "yes_man"] == [
        "I agree (0 messages seen).",
        "I agree (2 messages seen).",
        "I agree (2 messages seen).",
    ]


async def test_votes_that_are_all_null_are_no_consensus(dev_server, task_queue):
    data = flow(participants=["scribe", "scribe2"], until={"consensus": True}, max_turns=3)
    data["agents"] = [{"name": "scribe2", "handler": "tests.chat_agents:scribe"}]
    _, out = await run(dev_server.client, task_queue, data)
    record = out.output["talk"]
    assert record["ended_by"] == "max_turns" and record["decision"] is None
    assert record["transcript"][-1] == {"turn": 3, "speaker": "scribe", "message": "Noted turn 3.", "vote": None}


async def test_a_selector_agent_picks_each_speaker(dev_server, task_queue):
    data = flow(participants=["buyer", "yes_man", "stubborn"], selector="chair", max_turns=5)
    handle, out = await run(dev_server.client, task_queue, data)
    record = out.output["talk"]
    # chair: whoever spoke least so far, the last listed on a tie.
    assert speakers(record) == ["stubborn", "yes_man", "buyer", "stubborn", "yes_man"]
    assert record["transcript"][2]["message"] == "I offer 50."
    [chat] = await chat_runs(dev_server.client, handle)
    assert activity_ids(chat)[:4] == ["talk.turn1.select", "talk.turn1", "talk.turn2.select", "talk.turn2"]
    steps = (await describe_run(dev_server.client, handle.id)).steps  # `status` shows the chat's turns
    assert [(s.name, s.agent) for s in steps][:3] == [
        ("talk.turn1.select", "chair"),
        ("talk.turn1", "stubborn"),
        ("talk.turn2.select", "chair"),
    ]


@pytest.mark.parametrize(
    ("chat", "error"),
    [
        (
            {"participants": ["buyer", "seller"], "selector": "bad_chair"},
            "step 'talk': turn 1: selector 'bad_chair' named 'mallory', who is not a participant (participants: buyer, seller)",
        ),
        (
            {"participants": ["seller", "broken"]},
            "step 'talk': turn 2: participant 'broken' failed: agent 'broken' raised ValueError: the ledger is unbalanced",
        ),
        (
            {"participants": ["seller", "echo"]},
            "step 'talk': turn 2: participant 'echo' returned {'topic': {'item': 'lamp', 'list_price': 100},",
        ),
    ],
    ids=["bad-selector", "agent-exhausted", "bad-reply"],
)
async def test_a_failing_chat_fails_the_run_naming_the_step_and_cause(dev_server, task_queue, chat, error):
    handle, out = await run(dev_server.client, task_queue, flow(**chat))
    assert out is None
    status = await describe_run(dev_server.client, handle.id)
    assert status.status == "failed"
    assert status.error.startswith(error), status.error


async def test_a_long_chat_continues_as_new_without_losing_its_transcript(dev_server, task_queue):
    data = flow(participants=["seller", "buyer"], until={"keyword": "APPROVED"}, turns_per_run=3)
    async with running_worker(dev_server.client, task_queue):
        handle = await start(dev_server.client, request(data, LAMP, task_queue))
        out = await handle.result()
        record = out.output["talk"]
        assert [m["turn"] for m in record["transcript"]] == [1, 2, 3, 4, 5, 6, 7, 8]
        assert [m["message"] for m in record["transcript"]] == NEGOTIATION
        runs = await chat_runs(dev_server.client, handle)
        assert [activity_ids(events) for events in runs] == [
            ["talk.turn1", "talk.turn2", "talk.turn3"],
            ["talk.turn4", "talk.turn5", "talk.turn6"],
            ["talk.turn7", "talk.turn8"],
        ]
        assert [events[-1].event_type for events in runs] == [
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
        ]
        # The last run's transcript query covers every earlier run too.
        transcript = await dev_server.client.get_workflow_handle(f"{handle.id}/talk").query("transcript")
        assert [m["message"] for m in transcript] == NEGOTIATION
    # `status` follows the chat's chain of runs: every turn, once.
    steps = (await describe_run(dev_server.client, handle.id)).steps
    assert [s.name for s in steps] == [f"talk.turn{n}" for n in range(1, 9)]
    assert all(s.status == "completed" for s in steps)


async def test_the_topic_is_a_template_over_the_run_input(dev_server, task_queue):
    data = flow(participants=["seller", "buyer"], until={"keyword": "APPROVED"})
    _, out = await run(dev_server.client, task_queue, data, {"item": "kettle", "list_price": 60})
    record = out.output["talk"]
    assert [m["message"] for m in record["transcript"]] == [
        "The kettle is yours for 60.",
        "I offer 30.",
        "The kettle is yours for 50.",
        "I offer 40.",
        "The kettle is yours for 40.",
        "APPROVED at 40.",
    ]
    assert out.state["talk"] == record
