"""ENSEMBLE_LLM on the worker switches the bundled flows' model-capable agents to a model: run
through the CLI exactly as a user would, against the loopback model server."""

from __future__ import annotations

import json

import pytest

from ensemble.examples.document_pipeline.models import Classification, Extraction
from ensemble.examples.procurement.models import Vote
from tests.conftest import ROOT, run_cli
from tests.flowkit import run_bundled
from tests.llm_agents import SENTINEL_KEY, llm_server  # noqa: F401

EXTRACTION = {
    "title": "INVOICE",
    "emails": ["billing@acme.test"],
    "phones": [],
    "dates": ["2026-03-14"],
    "amounts": [{"value": 12400.0, "currency": "USD"}],
    "total": {"value": 12400.0, "currency": "USD"},
    "invoice_number": "INV-2026-0042",
    "po_number": None,
    "contract_parties": [],
    "sender": "Acme Corp",
    "subject": None,
    "employee": None,
    "reference_numbers": [],
    "word_count": 120,
}
CLASSIFICATION = {
    "label": "invoice",
    "confidence": 0.93,
    "scores": {"invoice": 9, "purchase_order": 2, "contract": 0, "support_email": 0, "hr_request": 0, "other": 1},
    "signals": ["INVOICE heading", "invoice number INV-2026-0042", "amount due"],
}


def _env(dev_server, task_queue, server, **extra):
    return dev_server.env(
        ENSEMBLE_TASK_QUEUE=task_queue, OPENAI_BASE_URL=f"{server.url}/v1", OPENAI_API_KEY=SENTINEL_KEY, **extra
    )


def _run(env, flow: str, input_file: str) -> dict:
    return run_bundled(env, flow, ROOT / "examples" / input_file)


def test_document_pipeline_runs_its_extractor_and_classifier_on_the_model(dev_server, task_queue, llm_server):
    server = llm_server(
        [
            {"match": "You extract structured fields", "reply": {"json": EXTRACTION, "usage": [900, 200]}},
            {"match": "You classify a business document", "reply": {"json": CLASSIFICATION, "usage": [700, 60]}},
        ]
    )
    env = _env(dev_server, task_queue, server, ENSEMBLE_LLM="openai:test-model")
    out = _run(env, "document_pipeline", "document_pipeline/documents/invoice.txt")
    result = out["result"]
    assert (result["classification"], result["confidence"]) == ("invoice", 0.93)
    assert result["fields"] == Extraction.model_validate(EXTRACTION).model_dump(mode="json")
    # The router is still the Python agent: it reads the model's fields (12,400 needs approval).
    assert result["route"]["queue"] == "accounts-payable" and result["route"]["requires_approval"] is True

    extract, classify = [r["body"] for r in server.requests()]
    assert extract["model"] == classify["model"] == "test-model"
    assert extract["response_format"]["json_schema"]["schema"] == Extraction.model_json_schema()
    assert classify["response_format"]["json_schema"]["schema"] == Classification.model_json_schema()
    assert "INVOICE" in extract["messages"][1]["content"] and "INV-2026-0042" in classify["messages"][1]["content"]

    status = json.loads(run_cli(["status", out["run_id"], "--json"], env).stdout)
    by_agent = {s["agent"]: s for s in status["steps"]}
    assert by_agent["extractor"]["usage"] == {"prompt_tokens": 900, "completion_tokens": 200, "total_tokens": 1100}
    assert by_agent["classifier"]["model"] == "openai:test-model" and by_agent["router"]["usage"] is None
    assert status["usage"] == {"prompt_tokens": 1600, "completion_tokens": 260, "total_tokens": 1860}


def test_procurement_votes_come_from_the_model_and_a_split_is_adjudicated(dev_server, task_queue, llm_server):
    def vote(match: str, decision: str, confidence: float, reason: str) -> dict:
        return {"match": match, "reply": {"json": {"vote": decision, "confidence": confidence, "reason": reason}}}

    server = llm_server(
        [
            vote("for the finance team", "approve", 0.9, "within budget"),
            vote("for supplier risk", "approve", 0.8, "established vendor"),
            vote("for the legal team", "reject", 0.6, "auto-renewal clause"),
            vote("meets the requester's requirements", "approve", 0.85, "all requirements covered"),
            vote("for sustainability", "approve", 0.7, "ISO 14001"),
            vote("You settle a split vote", "approve", 0.75, "the legal reject is not confident enough to block"),
        ]
    )
    env = _env(dev_server, task_queue, server, ENSEMBLE_LLM="openai:test-model")
    result = _run(env, "procurement", "procurement/request.json")["result"]
    assert (result["recommendation"], result["adjudicated"]) == ("approve", True)
    assert {v["agent"]: v["vote"] for v in result["votes"]}["legal_check"] == "reject"
    assert all(Vote.model_validate({k: v[k] for k in ("vote", "confidence", "reason")}) for v in result["votes"])
    assert sorted(r["entry"] for r in server.requests()) == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("setting", ["", "   "])
def test_without_ensemble_llm_the_python_agents_run_and_no_model_is_called(dev_server, task_queue, llm_server, setting):
    server = llm_server([])
    env = _env(dev_server, task_queue, server, ENSEMBLE_LLM=setting)
    result = _run(env, "document_pipeline", "document_pipeline/documents/invoice.txt")["result"]
    assert result["classification"] == "invoice"
    assert server.requests() == []


def test_contract_review_plans_rates_and_summarises_on_the_model(dev_server, task_queue, llm_server):
    from ensemble.examples.contract_review.agents import planner
    from ensemble.examples.contract_review.models import PlanRequest

    plan = planner(PlanRequest(text="1. Fees\nThe customer pays.")).model_dump()
    rating = {
        "clause": "1",
        "title": "Fees",
        "category": "payment",
        "level": "low",
        "reason": "late interest",
        "text": "...",
    }
    flags = [{"clause": "10", "title": "Liability", "category": "liability", "level": "high", "reason": "uncapped"}]
    summary = {
        "flags": flags,
        "overall": "high",
        "counts": {"clauses": 14, "flagged": 1, "findings": 0, "low": 0, "medium": 0, "high": 1},
        "summary": "One high risk: uncapped liability.",
        "requires_legal_review": True,
    }
    server = llm_server(
        [
            {"match": "You plan the review of a contract", "reply": {"json": plan}},
            {"match": "rating the risk of contract clauses", "reply": {"json": {"ratings": [rating]}}, "repeat": True},
            {"match": "You summarise a contract review", "reply": {"json": summary}},
        ]
    )
    env = _env(dev_server, task_queue, server, ENSEMBLE_LLM="openai:test-model")
    out = _run(env, "contract_review", "contract_review/contract.txt")
    assert out["result"]["flags"] == flags and out["result"]["requires_legal_review"] is True
    entries = [r["entry"] for r in server.requests()]
    assert entries[0] == 0 and entries[-1] == 2 and entries.count(1) == len(entries) - 2 > 1  # one rating per clause
    planner_prompt = server.requests()[0]["body"]["messages"][1]["content"]
    assert planner_prompt.endswith(
        "(none unless re-planning): \nA reviewer's notes on an earlier review (none unless it was sent back): \n"
    )
    status = json.loads(run_cli(["status", out["run_id"], "--json"], env).stdout)
    assert status["usage"]["total_tokens"] == 15 * len(entries)  # child workflows' steps included
