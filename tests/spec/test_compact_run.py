"""A run request writes its flow and its own fields compact, by a frozen table of defaults, and reads
them back from the version it names, never from today's models (ensemble.spec.compact_run). A
recorded run's compact request and its replay: tests/spec/test_compact.py."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from ensemble.authoring.flows import all_flows
from ensemble.runtime.converter import data_converter
from ensemble.spec import RunRequest, compact_run
from ensemble.spec.compact import MARK
from tests.flowkit import request
from tests.spec.test_compact import check_written

CONVERTER = data_converter().payload_converter


def test_the_latest_frozen_tables_are_the_models_defaults():
    assert compact_run.derive(RunRequest) == compact_run.TABLES[compact_run.LATEST], (
        "a default of a run request, a flow or a step changed: add TABLES[LATEST + 1] in ensemble/spec/frozen.py "
        "(compact_run.derive(RunRequest)) and keep every earlier version, so recorded runs read as they started"
    )


# Every version's tables as first written: runs recorded with them depend on them, byte for byte.
WRITTEN = {1: "1a6086d89a12d7b9e92114510f94574cd74f0def73e0e4742e0699212f9c4535"}


def test_a_written_versions_tables_never_change():
    check_written(compact_run.TABLES, WRITTEN)


# Every step kind, nested, with values off their defaults at several depths.
EVERY_KIND = """
name: every_kind
description: all step kinds
version: 3
imports: [tests.agents, tests.chat_agents]
state:
  log: {reducer: append, default: []}
steps:
  - name: outer
    sequence:
      - agent: shout
        input: {text: $input.text}
        output: loud
      - name: fan
        parallel:
          branches:
            - {name: a, agent: shout, input: {text: a}}
            - {name: b, agent: shout, input: {text: b}}
          join: {policy: quorum, quorum: 1, deadline_s: 30}
          merge: {strategy: collect}
  - name: talk
    chat:
      participants: [seller, buyer]
      max_turns: 4
      until: {keyword: DEAL}
      window: 1
  - name: review
    gate:
      approvers: [alice, bob]
      quorum: 2
      timeout: 1d
      escalate: [{approvers: [carol]}]
output: $loud
budget: {tokens: 1000}
"""


def _flows():
    return [(f.spec.name, f.spec, f.agents) for f in all_flows()] + [
        ("every_kind", *_parsed(EVERY_KIND)),
    ]


def _parsed(text: str):
    req = request(text, None, "q")
    return req.flow, req.agents


@pytest.mark.parametrize("name,flow,agents", _flows(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_flows_request_reads_back_equal_and_smaller(name, flow, agents):
    req = RunRequest(flow=flow, agents=agents, input={"x": 1}, task_queue="q")
    wire = CONVERTER.to_payloads([req])[0]
    data = json.loads(wire.data)
    assert data[MARK] == compact_run.LATEST
    assert CONVERTER.from_payloads([wire], [RunRequest])[0] == req
    full = compact_run.expand(data)  # the request as earlier releases wrote it
    assert MARK not in full and len(json.dumps(full)) > len(json.dumps(data))
    assert RunRequest.model_validate(full) == req  # and that shape reads the same
    assert "null" not in json.dumps(data["flow"]["steps"])  # no step field at a null default is written


def test_values_off_their_defaults_are_kept_whatever_their_json_type():
    tables = {"T": {"defaults": {"n": 1, "f": 1.0, "b": False, "l": []}}}
    kept = {"n": 1.0, "f": 1, "b": 0, "l": [None]}
    assert compact_run.strip(tables, "T", kept) == kept
    assert compact_run.strip(tables, "T", {"n": 1, "f": 1.0, "b": False, "l": []}) == {}
    assert compact_run.fill(tables, "T", {}) == {"n": 1, "f": 1.0, "b": False, "l": []}


def test_what_a_compact_request_leaves_out_comes_from_its_versions_table(monkeypatch):
    data = json.loads(CONVERTER.to_payloads([request(EVERY_KIND, None, "q")])[0].data)
    assert "version" in data["flow"] and "join" in data["flow"]["steps"][0]["sequence"][1]["parallel"]
    assert "reuse" not in data and "origin" not in data and "inbox" not in data
    assert "max_concurrency" not in data["flow"]["steps"][0]["sequence"][1]["parallel"]
    tables = compact_run.TABLES[1]
    # had a default changed since, the run would still read the value it was started with
    monkeypatch.setitem(tables["RunRequest"]["defaults"], "inbox", False)
    monkeypatch.setitem(tables["ParallelSpec"]["defaults"], "max_concurrency", 7)
    monkeypatch.setitem(tables["ChatSpec"]["defaults"], "turns_per_run", 9)
    req = RunRequest.model_validate(data)
    assert req.inbox is False
    assert req.flow.steps[0].sequence[1].parallel.max_concurrency == 7
    assert req.flow.steps[1].chat.turns_per_run == 9
    assert req.flow.steps[1].chat.window == 1 and req.flow.version == 3  # written values stay


def test_an_unknown_defaults_version_is_refused_with_its_reason():
    data = json.loads(CONVERTER.to_payloads([request(EVERY_KIND, None, "q")])[0].data)
    with pytest.raises(ValidationError, match="defaults version 99, which this release does not know"):
        RunRequest.model_validate({**data, MARK: 99})
