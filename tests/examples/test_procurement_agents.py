"""The procurement agents, called directly: the three bundled requests and requests they have never seen."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ensemble.authoring.agents import get_agent
from ensemble.examples.procurement import agents as procurement_agents
from ensemble.examples.procurement.agents import (
    adjudicator,
    budget_check,
    legal_check,
    sustainability,
    technical_fit,
    vendor_risk,
)
from ensemble.examples.procurement.models import Adjudication, BallotView, PurchaseRequest, Vote

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "procurement"
VOTERS: dict[str, Callable[[PurchaseRequest], Vote]] = {
    "budget_check": budget_check,
    "vendor_risk": vendor_risk,
    "legal_check": legal_check,
    "technical_fit": technical_fit,
    "sustainability": sustainability,
}


def load(name: str) -> PurchaseRequest:
    return PurchaseRequest.model_validate(json.loads((EXAMPLE / name).read_text(encoding="utf-8")))


def votes_on(request: PurchaseRequest) -> dict[str, tuple[str, float]]:
    return {name: (vote.vote, vote.confidence) for name, voter in VOTERS.items() for vote in [voter(request)]}


def ballots(request: PurchaseRequest, weights: dict[str, float] | None = None) -> list[BallotView]:
    return [
        BallotView(agent=name, weight=(weights or {}).get(name, 1.0), **voter(request).model_dump())
        for name, voter in VOTERS.items()
    ]


def overridden(request: PurchaseRequest, agent: str, confidence: float) -> list[BallotView]:
    """The request's ballots, with one agent's vote turned into a reject of the given confidence."""
    return [
        b.model_copy(update={"vote": "reject", "confidence": confidence}) if b.agent == agent else b
        for b in ballots(request)
    ]


def request(**changes: Any) -> PurchaseRequest:
    """An unremarkable request every voter approves, with some fields changed."""
    data: dict[str, Any] = {
        "id": "PR-T-1",
        "item": "Laptops",
        "category": "IT hardware",
        "quantity": 10,
        "unit_price": 1000.0,
        "department": "Engineering",
        "budget_remaining": 50000.0,
        "justification": "Replace five-year-old laptops that no longer receive security updates.",
        "vendor": {
            "name": "Acme Computers",
            "country": "Germany",
            "years_in_business": 15,
            "certifications": ["ISO 9001"],
            "esg_score": 70,
        },
        "requirements": ["16 GB RAM", "SSD 512 GB"],
        "offered": ["32 GB RAM", "SSD 1 TB", "SSD 1024 GB"],
        "contract_terms": ["Net 30"],
    }
    vendor = changes.pop("vendor", {})
    data.update(changes)
    data["vendor"].update(vendor)
    return PurchaseRequest.model_validate(data)


def test_agents_are_registered_with_their_docstring_descriptions() -> None:
    for name in [*VOTERS, "adjudicator"]:
        spec = get_agent(name)
        assert spec is not None and spec.handler == f"ensemble.examples.procurement.agents:{name}"
        assert spec.description == inspect.getdoc(getattr(procurement_agents, name)).split("\n\n")[0]


# --- the bundled requests ----------------------------------------------------------------------


def test_request_json_splits_the_vote_three_to_two() -> None:
    assert votes_on(load("request.json")) == {
        "budget_check": ("approve", 0.7),
        "vendor_risk": ("approve", 0.95),
        "legal_check": ("approve", 0.9),
        "technical_fit": ("reject", 0.7),
        "sustainability": ("reject", 0.75),
    }
    reasons = {name: voter(load("request.json")).reason for name, voter in VOTERS.items()}
    assert reasons["technical_fit"] == "covers 3/5 requirements (60%); not met: Android 13, drop tested 1.5 m"
    assert "ESG score 48" in reasons["sustainability"] and "22% renewable" in reasons["sustainability"]
    assert "27,560.00 USD against 31,500.00 USD" in reasons["budget_check"]


def test_request_clear_is_approved_by_everyone() -> None:
    assert votes_on(load("request_clear.json")) == {
        "budget_check": ("approve", 0.95),
        "vendor_risk": ("approve", 0.95),
        "legal_check": ("approve", 0.9),
        "technical_fit": ("approve", 0.95),
        "sustainability": ("approve", 0.95),
    }


def test_request_risky_gets_several_rejects() -> None:
    risky = load("request_risky.json")
    assert votes_on(risky) == {
        "budget_check": ("approve", 0.95),
        "vendor_risk": ("reject", 0.99),
        "legal_check": ("reject", 0.95),
        "technical_fit": ("approve", 0.95),
        "sustainability": ("reject", 0.6),
    }
    assert "RU (Russia), a sanctioned country" in vendor_risk(risky).reason
    legal = legal_check(risky).reason
    assert all(issue in legal for issue in ("auto-renewal", "unlimited liability", "exclusivity"))


# --- adjudicator -------------------------------------------------------------------------------


def test_adjudicator_approves_the_split_request_by_weight() -> None:
    decision = adjudicator(Adjudication(request=load("request.json"), votes=ballots(load("request.json"))))
    assert (decision.vote, decision.confidence) == ("approve", 0.64)
    assert decision.reason.startswith(
        "PR-2026-0142 approved: 3 approve / 2 reject; weighted approve 2.55 vs reject 1.45"
    )
    assert "dissent: sustainability (0.75)" in decision.reason and "technical_fit (0.70)" in decision.reason


def test_adjudicator_weights_can_turn_the_decision() -> None:
    split = load("request.json")
    decision = adjudicator(Adjudication(request=split, votes=ballots(split, {"technical_fit": 3.0})))
    assert (decision.vote, decision.confidence) == ("reject", 0.53)  # 2.85 reject vs 2.55 approve
    assert "outvoted: budget_check (0.70)" in decision.reason


def test_confident_legal_or_vendor_rejects_block() -> None:
    risky = load("request_risky.json")
    decision = adjudicator(Adjudication(request=risky, votes=ballots(risky)))
    assert (decision.vote, decision.confidence) == ("reject", 0.99)
    assert "blocked by legal_check (0.95)" in decision.reason and "vendor_risk (0.99)" in decision.reason
    clear = load("request_clear.json")
    blocked = adjudicator(Adjudication(request=clear, votes=overridden(clear, "legal_check", 0.8)))
    assert (blocked.vote, blocked.confidence) == ("reject", 0.8) and "blocked by legal_check" in blocked.reason


def test_unconfident_or_other_rejects_do_not_block() -> None:
    clear = load("request_clear.json")
    assert adjudicator(Adjudication(request=clear, votes=overridden(clear, "vendor_risk", 0.79))).vote == "approve"
    assert adjudicator(Adjudication(request=clear, votes=overridden(clear, "budget_check", 0.99))).vote == "approve"


def test_adjudicator_edge_cases() -> None:
    clear = load("request_clear.json")
    tie = [
        BallotView(agent="budget_check", vote="approve", confidence=0.7, reason="fits"),
        BallotView(agent="technical_fit", vote="reject", confidence=0.7, reason="misses specs"),
    ]
    assert adjudicator(Adjudication(request=clear, votes=tie)).vote == "reject"
    assert adjudicator(Adjudication(request=clear, votes=[])) == Vote(
        vote="reject", confidence=0.5, reason="PR-2026-0157: no votes were cast"
    )
    prefixed = [BallotView(agent="review.legal_check", vote="reject", confidence=0.9, reason="auto-renewal"), tie[0]]
    assert "blocked by review.legal_check" in adjudicator(Adjudication(request=clear, votes=prefixed)).reason
    votes = ballots(load("request.json"))
    forward = adjudicator(Adjudication(request=clear, votes=votes))
    assert adjudicator(Adjudication(request=clear, votes=votes[::-1])) == forward


# --- requests the voters have never seen -------------------------------------------------------


def test_budget_rules() -> None:
    assert budget_check(request()).vote == "approve"
    slightly_over = budget_check(request(budget_remaining=9500.0))
    assert (slightly_over.vote, slightly_over.confidence) == ("reject", 0.85)
    assert budget_check(request(budget_remaining=5000.0)).confidence == 0.95
    assert budget_check(request(budget_remaining=0.0)).vote == "reject"
    short = budget_check(request(justification="need them"))
    assert (short.vote, short.confidence) == ("reject", 0.7) and "justification" in short.reason


def test_vendor_risk_rules() -> None:
    assert vendor_risk(request()).vote == "approve"
    assert vendor_risk(request(vendor={"country": "IR"})).confidence == 0.99
    assert vendor_risk(request(vendor={"country": "Islamic Republic of Iran"})).vote == "reject"
    young = vendor_risk(request(vendor={"years_in_business": 1, "certifications": []}))
    assert (young.vote, young.confidence) == ("approve", 0.65)  # 3 points
    risky = vendor_risk(request(vendor={"country": "Venezuela", "years_in_business": 3, "certifications": []}))
    assert (risky.vote, risky.confidence) == ("reject", 0.95) and "high-risk country" in risky.reason  # 3 + 1 + 1
    mitigated = vendor_risk(request(vendor={"country": "Venezuela", "years_in_business": 3}))
    assert (mitigated.vote, mitigated.confidence) == ("approve", 0.65)  # 3 + 1 - 1 for ISO 9001
    assert "mitigated by ISO 9001" in mitigated.reason
    incidents = vendor_risk(request(vendor={"incidents": ["late delivery in 2024", "2025 product recall"]}))
    assert (incidents.vote, incidents.confidence) == ("reject", 0.95)  # 2 + 3 - 1 (ISO 9001)
    assert "severe incident: 2025 product recall" in incidents.reason


@pytest.mark.parametrize(
    ("terms", "vote", "confidence"),
    [
        (["Net 30", "Non-exclusive licence", "Prices exclusive of VAT"], "approve", 0.9),
        (["No automatic renewal", "Liability capped at fees paid"], "approve", 0.9),
        (["Evergreen contract"], "reject", 0.9),
        (["The buyer purchases exclusively from the vendor", "Liability: unlimited"], "reject", 0.95),
        ([], "approve", 0.6),
    ],
)
def test_legal_rules(terms: list[str], vote: str, confidence: float) -> None:
    result = legal_check(request(contract_terms=terms))
    assert (result.vote, result.confidence) == (vote, confidence), result.reason


@pytest.mark.parametrize(
    ("requirements", "offered", "delivery_days", "vote", "confidence"),
    [
        (["16 GB RAM", "SSD 512 GB"], ["32 GB RAM", "SSD 1 TB", "SSD 1024 GB"], None, "approve", 0.95),
        (["16 GB RAM", "SSD 512 GB"], ["8 GB RAM", "SSD 512 GB"], None, "reject", 0.75),
        (["weight max 1.4 kg", "screen 14 inch"], ["weight 1.3 kg", "screen 14 inch"], None, "approve", 0.95),
        (["weight max 1.4 kg"], ["weight 1.6 kg"], None, "reject", 0.95),
        (["delivery within 10 days", "backlit keyboard"], ["backlit keyboards"], 7, "approve", 0.95),
        (["delivery within 10 days", "backlit keyboard"], ["backlit keyboards"], 12, "reject", 0.75),
        (["a", "b", "c", "d", "e"], ["a", "b", "c", "d"], None, "approve", 0.9),
        ([], [], None, "approve", 0.5),
    ],
)
def test_technical_fit(
    requirements: list[str], offered: list[str], delivery_days: int | None, vote: str, confidence: float
) -> None:
    result = technical_fit(request(requirements=requirements, offered=offered, delivery_days=delivery_days))
    assert (result.vote, result.confidence) == (vote, confidence), result.reason


@pytest.mark.parametrize(
    ("vendor", "vote", "confidence"),
    [
        ({"esg_score": 70}, "approve", 0.7),
        ({"esg_score": 55, "renewable_energy_pct": 60}, "approve", 0.7),
        ({"esg_score": 10, "certifications": ["ISO 14001:2015"]}, "approve", 0.7),
        ({"esg_score": 65, "renewable_energy_pct": 90, "certifications": ["iso 14001"]}, "approve", 0.95),
        ({"esg_score": None}, "reject", 0.6),
        ({"esg_score": 55, "renewable_energy_pct": 30}, "reject", 0.75),
        ({"esg_score": 35}, "reject", 0.85),
    ],
)
def test_sustainability(vendor: dict[str, Any], vote: str, confidence: float) -> None:
    result = sustainability(request(vendor=vendor))
    assert (result.vote, result.confidence) == (vote, confidence), result.reason


def test_votes_are_deterministic() -> None:
    for name in ("request.json", "request_clear.json", "request_risky.json"):
        first = [vote.model_dump() for vote in (voter(load(name)) for voter in VOTERS.values())]
        again = [vote.model_dump() for vote in (voter(load(name)) for voter in VOTERS.values())]
        assert first == again
        decision = adjudicator(Adjudication(request=load(name), votes=ballots(load(name))))
        assert decision == adjudicator(Adjudication(request=load(name), votes=ballots(load(name))))
