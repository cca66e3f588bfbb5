"""A run request writes its agents compact, with the version of the defaults they were written
with, and reads them back from that version's frozen table, never from today's models."""

from __future__ import annotations

import hashlib
import json

import pytest
from pydantic import ValidationError
from temporalio.api.enums.v1 import EventType
from temporalio.worker import Replayer

from ensemble.authoring.flows import all_flows
from ensemble.runtime.converter import data_converter
from ensemble.runtime.worker import WORKFLOWS, workflow_runner
from ensemble.spec import RunRequest, compact, compact_run
from ensemble.spec.agent import AgentSpec
from ensemble.spec.chat import ChatInput
from tests.flowkit import request, run_to_end


def test_the_latest_frozen_defaults_are_the_models_defaults():
    assert compact.derive(AgentSpec) == compact.DEFAULTS[compact.LATEST], (
        "an agent spec's default changed: add DEFAULTS[LATEST + 1] (compact.derive(AgentSpec)) and keep "
        "every earlier version, so runs recorded with it read as they were started"
    )


# Every version's table as it was first written: runs recorded with it depend on it, byte for byte.
WRITTEN = {1: "a215987529ad2ff04e02faf3d2dd92d9800f095aa923d802f5e88d34e3bb81aa"}


def check_written(versions: dict, written: dict[int, str]) -> None:
    """Every written version's table still has the digest it was first written with, and every
    version has its digest recorded."""
    now = {v: hashlib.sha256(json.dumps(t, sort_keys=True).encode()).hexdigest() for v, t in versions.items()}
    assert {v: now.get(v) for v in written} == written, "runs were recorded with these tables: add a version instead"
    assert set(now) == set(written), "a new version: record its table's digest in WRITTEN"


def test_a_written_versions_table_never_changes():
    check_written(compact.DEFAULTS, WRITTEN)


@pytest.mark.parametrize("loaded", all_flows(), ids=lambda f: f.spec.name)
def test_every_bundled_flows_request_reads_back_equal_and_smaller(loaded):
    req = RunRequest(flow=loaded.spec, agents=loaded.agents, input={"x": 1})
    wire = data_converter().payload_converter.to_payloads([req])[0]
    data = json.loads(wire.data)
    assert all(agent.get(compact.MARK, compact.LATEST) == compact.LATEST for agent in data["agents"].values())
    assert all(compact.MARK in agent or compact.BASE in agent for agent in data["agents"].values())
    assert data_converter().payload_converter.from_payloads([wire], [RunRequest])[0] == req
    full = {name: spec.model_dump(mode="json") for name, spec in req.agents.items()}
    assert len(json.dumps(data["agents"])) < len(json.dumps(full))
    # a request of an earlier release, agents in the full shape, reads the same
    assert RunRequest.model_validate({**data, "agents": full}) == req


def test_what_a_compact_agent_leaves_out_comes_from_its_versions_table(monkeypatch):
    recorded = {compact.MARK: 1, "name": "a", "handler": "tests.agents:shout"}
    assert RunRequest.model_validate(_request(recorded)).agents["a"].timeout_s == 60.0
    # had the model's default changed since, the run would still read the value it started with
    monkeypatch.setitem(compact.DEFAULTS[1]["defaults"], "timeout_s", 77.0)
    monkeypatch.setitem(compact.DEFAULTS[1]["defaults"]["retry"], "max_attempts", 9)  # retry left out whole
    monkeypatch.setitem(compact.DEFAULTS[1]["one"]["retry"]["defaults"], "max_attempts", 9)  # a field of it left out
    agent = RunRequest.model_validate(_request(recorded)).agents["a"]
    assert (agent.timeout_s, agent.retry.max_attempts) == (77.0, 9)
    partial = {**recorded, "retry": {"initial_interval_s": 0.5}}  # a nested model: the rest from its table
    assert RunRequest.model_validate(_request(partial)).agents["a"].retry.max_attempts == 9


def test_an_unknown_defaults_version_is_refused_with_its_reason():
    with pytest.raises(ValidationError, match="defaults version 99, which this release does not know"):
        RunRequest.model_validate(_request({compact.MARK: 99, "name": "a", "handler": "tests.agents:shout"}))


async def test_a_run_records_its_agents_compact_and_replays(dev_server, task_queue):
    flow = "name: compact_hello\nimports: [tests.agents]\nsteps:\n  - agent: shout\n    input: {text: $input.text}\n"
    handle, outcome = await run_to_end(dev_server.client, task_queue, flow, {"text": "hi"})
    assert outcome is not None and outcome.output == {"shout": {"text": "HI"}}
    history = await handle.fetch_history()
    started = history.events[0]
    assert started.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
    recorded = json.loads(started.workflow_execution_started_event_attributes.input.payloads[0].data)
    assert recorded["agents"]["shout"] == {compact.MARK: compact.LATEST,
                                           "description": "Upper-cases text", "handler": "tests.agents:shout",
                                           "input_schema": recorded["agents"]["shout"]["input_schema"],
                                           "output_schema": recorded["agents"]["shout"]["output_schema"]}  # fmt: skip
    # the request itself is compact too (ensemble.spec.compact_run): the flow without its defaults
    assert recorded[compact.MARK] == compact_run.LATEST
    assert recorded["flow"] == {"name": "compact_hello", "imports": ["tests.agents"],
                                "steps": [{"agent": "shout", "input": {"text": "$input.text"}}]}  # fmt: skip
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=data_converter(), workflow_runner=workflow_runner())
    await replayer.replay_workflow(history)  # raises on any nondeterminism


def _request(agent: dict) -> dict:
    base = json.loads(data_converter().payload_converter.to_payloads([request(_FLOW, None, "q")])[0].data)
    return {**base, "agents": {"a": agent}}


_FLOW = "name: one\nimports: [tests.agents]\nsteps:\n  - agent: shout\n    input: {text: hi}\n"


def test_a_group_chats_input_records_its_participants_compact():
    flow = "name: talk\nimports: [tests.chat_agents]\nsteps:\n  - {name: talk, chat: {participants: [seller, buyer]}}\n"
    req = request(flow, None, "q")
    chat = ChatInput(spec=req.flow.steps[0].chat, agents=req.agents, run_id="r", flow="talk", path="talk",
                     task_queue="q")  # fmt: skip
    wire = data_converter().payload_converter.to_payloads([chat])[0]
    assert all(compact.MARK in a or compact.BASE in a for a in json.loads(wire.data)["agents"].values())
    assert data_converter().payload_converter.from_payloads([wire], [ChatInput])[0] == chat


def _llm_agent(name: str, **llm) -> AgentSpec:
    settings = {"instructions": "You are one step of a document pipeline. Answer in one short sentence."}
    return AgentSpec.model_validate(
        {"name": name, "kind": "llm", "timeout_s": 300.0, "model": "openai:m", "llm": {**settings, **llm}}
    )


def _round_trip(agents: dict[str, AgentSpec]) -> tuple[dict, dict[str, AgentSpec]]:
    req = RunRequest(flow=request(_FLOW, None, "q").flow, agents=agents, input=None)
    wire = data_converter().payload_converter.to_payloads([req])[0]
    back = data_converter().payload_converter.from_payloads([wire], [RunRequest])[0]
    return json.loads(wire.data)["agents"], dict(back.agents)


def test_alike_agents_are_recorded_as_the_changes_to_an_earlier_one():
    agents = {f"m{i}": _llm_agent(f"m{i}", prompt=f"{{run}} m{i}\n{{text}}") for i in range(1, 6)}
    recorded, back = _round_trip(agents)
    assert back == agents
    assert recorded["m1"][compact.MARK] == compact.LATEST and "name" not in recorded["m1"]  # the key names it
    for name in ("m2", "m3", "m4", "m5"):
        assert recorded[name] == {compact.BASE: "m1", "llm": {"prompt": f"{{run}} {name}\n{{text}}"}}
    one_by_one = {name: compact.compact(spec) for name, spec in agents.items()}
    assert len(json.dumps(recorded)) < len(json.dumps(one_by_one)) / 2


def test_changes_read_back_exactly_whatever_the_agents_hold():
    """Keys dropped at any depth, values of another type, free-form mappings whose own keys are
    the change markers: every agent reads back as it was, in any order."""
    agents = [
        _llm_agent("a", prompt="p", temperature=0.2, max_tokens=100),
        _llm_agent("b", prompt="p"),  # drops temperature and max_tokens (back to their defaults)
        AgentSpec.model_validate({"name": "c", "kind": "http", "url": "http://x/y", "headers": {"-": "1", "^": "2"}}),
        AgentSpec.model_validate({"name": "d", "kind": "http", "url": "http://x/y", "headers": {"^": "2"}}),
        AgentSpec.model_validate({"name": "e", "kind": "http", "url": "http://x/y", "headers": {"-": "^"}}),
        AgentSpec.model_validate({"name": "f", "kind": "http", "url": "http://x/z", "headers": {}}),
        AgentSpec.model_validate({"name": "g", "handler": "tests.agents:shout", "retry": {"max_attempts": 1}}),
        AgentSpec.model_validate({"name": "h", "handler": "tests.agents:shout", "input_schema": {"-": 1, "x": {}}}),
        AgentSpec.model_validate({"name": "i", "handler": "tests.agents:shout", "input_schema": {"x": 1}}),
    ]
    for order in (agents, agents[::-1], agents[1::2] + agents[::2]):
        by_name = {spec.name: spec for spec in order}
        recorded, back = _round_trip(by_name)
        assert back == by_name
        assert list(back) == list(by_name)
    recorded, _ = _round_trip({spec.name: spec for spec in agents})
    assert any(compact.BASE in agent for agent in recorded.values())  # some were written as changes


def test_changes_to_an_agent_not_recorded_before_them_are_refused():
    data = json.loads(data_converter().payload_converter.to_payloads([request(_FLOW, None, "q")])[0].data)
    data["agents"] = {"b": {compact.BASE: "a", "handler": "tests.agents:shout"}, **data["agents"]}
    with pytest.raises(ValidationError, match="changes to agent 'a', which is not recorded before it"):
        RunRequest.model_validate(data)
