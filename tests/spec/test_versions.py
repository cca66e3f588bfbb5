"""A run request names its flow's version instead of carrying it, where its start asked for that,
and reads back exactly the request it was (ensemble.spec.versions). Runs that do so on a real
server, workers that meet a version they do not know, and the readers: tests/runtime/test_flow_versions.py."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from ensemble.authoring.flows import find_flow
from ensemble.runtime.converter import data_converter
from ensemble.spec import RunRequest, versions
from ensemble.spec.run import flow_version, without_duplicate_agents
from tests.flowkit import request

CONVERTER = data_converter().payload_converter

FLOW = """
name: versioned_{tag}
description: two alike llm agents
agents:
  - name: first
    kind: llm
    model: openai:gpt-4o-mini
    llm: {{instructions: "Answer in one sentence.", prompt: "{{text}} ({tag})"}}
  - name: second
    kind: llm
    model: openai:gpt-4o-mini
    llm: {{instructions: "Answer in one sentence.", prompt: "again: {{text}}"}}
steps:
  - agent: first
    input: {{text: $input.text}}
  - agent: second
    input: {{text: $first}}
"""


def written(req: RunRequest) -> dict:
    return json.loads(CONVERTER.to_payloads([req])[0].data)


def read(data: dict) -> RunRequest:
    payload = CONVERTER.to_payloads([data])[0]
    return CONVERTER.from_payloads([payload], [RunRequest])[0]


def test_a_request_names_its_version_only_where_its_start_asks_and_reads_back_the_same():
    req = without_duplicate_agents(request(FLOW.format(tag="a"), {"text": "hi"}, "q"))
    inline = written(req)
    assert "flow" in inline and "agents" in inline and versions.REF not in inline

    body = flow_version(req)
    assert body == {"flow": inline["flow"], "agents": inline["agents"]}
    digest = versions.remember(body)
    assert written(req) == inline  # knowing the version is not asking for it

    with versions.naming({digest}):
        named = written(req)
    assert named[versions.REF] == f"versioned_a@{digest}"
    assert "flow" not in named and "agents" not in named
    assert {k: v for k, v in named.items() if k != versions.REF} == {
        k: v for k, v in inline.items() if k not in ("flow", "agents")
    }
    assert len(json.dumps(named)) < len(json.dumps(inline)) / 2
    assert read(named) == read(inline) == req

    with versions.naming({"another-digest"}):  # asked for another version: written inline
        assert written(req) == inline


def test_a_version_is_its_content():
    one = flow_version(request(FLOW.format(tag="b"), {"text": "x"}, "q"))
    other_input = flow_version(request(FLOW.format(tag="b"), {"text": "something else"}, "other-queue"))
    changed = flow_version(request(FLOW.format(tag="c"), {"text": "x"}, "q"))
    assert versions.digest(one) == versions.digest(other_input)  # input and queue are not the flow
    assert versions.digest(one) != versions.digest(changed)
    reordered = {"agents": one["agents"], "flow": one["flow"]}
    assert versions.digest(reordered) == versions.digest(one)  # canonical JSON
    assert len(versions.digest(one)) == 24 and "/" not in versions.digest(one)


def test_an_unknown_version_is_refused_in_words_and_reported_to_whoever_fetches():
    req = without_duplicate_agents(request(FLOW.format(tag="d"), {"text": "hi"}, "q"))
    body = flow_version(req)
    digest = versions.digest(body)
    assert not versions.known(digest)
    versions._known[digest] = body  # as the process that started it knew it
    with versions.naming({digest}):
        named = written(req)
    assert versions.REF in named
    del versions._known[digest]  # a process that does not

    told: list[str] = []
    stop = versions.on_miss(told.append)
    try:
        with pytest.raises(ValidationError, match=f"flow 'versioned_d' version {digest} is not known to this process"):
            read(named)
    finally:
        stop()
    assert told == [f"versioned_d@{digest}"]
    versions.remember(body)  # read from its record, say
    assert read(named) == req


def test_a_flow_found_by_name_is_a_known_version_and_one_from_a_file_is_not(tmp_path):
    loaded = find_flow("hello")
    assert versions.known(versions.digest(flow_version(RunRequest(flow=loaded.spec, agents=loaded.agents))))
    path = tmp_path / "adhoc.flow.yaml"
    path.write_text(FLOW.format(tag="e"))
    adhoc = find_flow(str(path))
    assert not versions.known(versions.digest(flow_version(RunRequest(flow=adhoc.spec, agents=adhoc.agents))))


@pytest.mark.parametrize("value", ["no-at-sign", 42, None])
def test_a_malformed_reference_is_refused(value):
    with pytest.raises(ValidationError, match="a flow version is named NAME@DIGEST"):
        RunRequest.model_validate({"~": 1, "@": value, "input": None})
