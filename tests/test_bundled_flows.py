"""Every bundled flow end to end through the CLI, on its example input and other real inputs."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ROOT, run_cli
from tests.flowkit import run_bundled

EXAMPLES = ROOT / "examples"


@pytest.fixture
def env(dev_server, task_queue):
    return dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue)


def run_flow(env, flow: str, input_path, *, expect_gate: bool | None = None) -> dict:
    return run_bundled(env, flow, input_path, expect_gate=expect_gate)["result"]


def test_flows_json_lists_every_bundled_flow_with_patterns(env):
    result = run_cli(["flows", "--json"], env)
    flows = {f["name"]: f for f in json.loads(result.stdout)}
    assert {n: f["patterns"] for n, f in flows.items()} == {
        "contract_review": ["sequential", "hierarchical", "approval"],
        "customer_enrichment": ["parallel"],
        "document_pipeline": ["sequential"],
        "hello": ["sequential"],
        "mcp_tools": [],  # one agent step
        "procurement": ["sequential", "parallel", "approval"],
    }
    assert flows["procurement"]["agents"][:5] == [
        "budget_check",
        "vendor_risk",
        "legal_check",
        "technical_fit",
        "sustainability",
    ]


@pytest.mark.parametrize(
    "name", ["contract_review", "customer_enrichment", "document_pipeline", "hello", "mcp_tools", "procurement"]
)
def test_each_bundled_flow_runs_on_its_example_input(env, name):
    flows = {f["name"]: f for f in json.loads(run_cli(["flows", "--json"], env).stdout)}
    assert run_flow(env, name, ROOT / flows[name]["example_input"]) is not None


def test_contract_review_flags_risky_clauses_only(env):
    result = run_flow(env, "contract_review", EXAMPLES / "contract_review/contract.txt", expect_gate=True)
    flags = {f["clause"]: f for f in result["flags"]}
    assert set(flags) == {"3", "4", "5", "7", "9", "10", "11", "13"}
    assert all(set(f) == {"clause", "title", "category", "level", "reason"} for f in flags.values())
    assert (flags["10"]["category"], flags["10"]["level"]) == ("liability", "high")
    assert flags["4"]["level"] == "medium"
    assert result["requires_legal_review"] is True
    assert [s["id"] for s in result["subtasks"]] == ["extract", "rate", "check", "summarize"]
    assert (result["legal"]["status"], result["legal"]["decided_by"]) == ("approved", "alice")


def test_contract_review_on_an_unseen_contract(env, tmp_path):
    contract = tmp_path / "nda.txt"
    contract.write_text(
        "MUTUAL NON-DISCLOSURE AGREEMENT\n\nThis Agreement is made between Blue Harbor Ltd and Quill Analytics Inc.\n\n"
        "1. Purpose\nThe parties wish to evaluate a possible partnership.\n\n"
        "2. Confidentiality\nEach party shall keep the other's Confidential Information secret for three (3) years.\n\n"
        "3. Liability\nNeither party's liability shall be limited in any way, and each party shall have unlimited liability for any loss.\n\n"
        "4. Term and Renewal\nThis Agreement renews automatically for successive one-year terms unless either party gives 120 days' written notice.\n\n"
        "5. Governing Law\nThis Agreement is governed by the laws of England and Wales.\n"
    )
    flags = {f["clause"]: f for f in run_flow(env, "contract_review", contract)["flags"]}
    assert flags["3"]["category"] == "liability" and flags["3"]["level"] == "high"
    assert flags["4"]["category"] == "auto_renewal"
    assert "1" not in flags and "5" not in flags


@pytest.mark.parametrize(
    "request_file, recommendation, adjudicated",
    [
        ("request.json", "approve", True),
        ("request_clear.json", "approve", False),
        ("request_risky.json", "reject", True),
    ],
)
def test_procurement_votes_and_decides(env, request_file, recommendation, adjudicated):
    """A split vote is adjudicated, then decided by the purchasing committee (approved here)."""
    result = run_flow(env, "procurement", EXAMPLES / "procurement" / request_file, expect_gate=adjudicated)
    assert (result["recommendation"], result["adjudicated"]) == (recommendation, adjudicated)
    assert result["decision"] == "approve"
    assert result["decided_by"] == ("purchasing committee (dave, erin)" if adjudicated else "agents (unanimous)")
    assert result["committee"]["status"] == ("approved" if adjudicated else "skipped")
    assert [v["agent"] for v in result["votes"]] == [
        "budget_check",
        "vendor_risk",
        "legal_check",
        "technical_fit",
        "sustainability",
    ]
    assert all(v["reason"] for v in result["votes"])


def test_customer_enrichment_resolves_a_real_conflict(env):
    result = run_flow(env, "customer_enrichment", EXAMPLES / "customer_enrichment/customer.json")
    [conflict] = result["conflicts"]
    assert conflict["key"] == "industry" and conflict["resolved_by"] == "data_steward"
    assert {c["agent"]: c["value"] for c in conflict["candidates"]} == {
        "firmographics": "retail",
        "web_profile": "food & beverage",
    }
    assert result["customer"]["industry"] == "retail"
    assert result["customer"]["contact"]["segment"] and result["customer"]["contact"]["email_valid"] is True
