"""Sizes of values a run without a payload store sends inline (ensemble/logic/inline.py)."""

from __future__ import annotations

from temporalio.contrib.pydantic import pydantic_data_converter

from ensemble.logic.inline import InlineBudget, inline_size, oversize_reason
from ensemble.runtime import payloads, server
from ensemble.spec import RunRequest, protocol
from tests.flowkit import request


def test_inline_size_is_the_size_the_data_converter_writes() -> None:
    for value in [{"text": "é€😀" * 1000, "n": [1, 2.5, None, True]}, "plain", {"a": {"b": ["x" * 5000]}}]:
        [payload] = pydantic_data_converter.payload_converter.to_payloads([value])
        assert inline_size(value) == len(payload.data), value


def test_the_budget_admits_one_input_alone_and_keeps_those_in_flight_under_one_message() -> None:
    budget = InlineBudget()
    big = protocol.INLINE_VALUE_LIMIT
    assert budget.admits(big) and budget.admits(budget.limit + 1)  # nothing in flight: always
    budget.in_flight = big
    assert budget.admits(budget.limit - big) and not budget.admits(budget.limit - big + 1)
    assert protocol.INLINE_VALUE_LIMIT < protocol.PAYLOAD_LIMIT < protocol.INLINE_TASK_LIMIT < 4 * 2**20


def test_the_reason_names_the_size_the_limit_and_the_fix() -> None:
    reason = oversize_reason("its input", 3 * 2**20, protocol.INLINE_VALUE_LIMIT, "pass less")
    assert reason.startswith("its input is 3.00 MiB of JSON, over the 0.94 MiB")
    assert "ENSEMBLE_PAYLOAD_STORE" in reason and reason.endswith("or pass less")


def test_a_request_without_a_limit_is_written_as_before_the_field() -> None:
    plain = request("name: x\nimports: [tests.agents]\nsteps:\n  - agent: shout\n    input: {text: hi}\n", {}, "q")
    [payload] = pydantic_data_converter.payload_converter.to_payloads([plain])
    assert b"inline_limit" not in payload.data  # read by workers that predate the field
    limited = plain.model_copy(update={"inline_limit": protocol.INLINE_VALUE_LIMIT})
    [payload] = pydantic_data_converter.payload_converter.to_payloads([limited])
    back = pydantic_data_converter.payload_converter.from_payloads([payload], [RunRequest])[0]
    assert back == limited and back.inline_limit == protocol.INLINE_VALUE_LIMIT


def test_the_payload_limit_is_the_one_ensemble_sets_on_temporal() -> None:
    assert protocol.PAYLOAD_LIMIT == payloads.INLINE_LIMIT == server.DYNAMIC_CONFIG["limit.blobSize.error"]
