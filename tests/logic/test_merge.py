"""Merge strategies and tie rules: decisions come from declared order and rules, never arrival."""

import pytest

from ensemble.logic.merge import Branch, MergeError, merge
from ensemble.spec import MergeSpec


def votes(*pairs, **kw) -> list[Branch]:
    out = []
    for name, vote in pairs:
        if vote is None:
            out.append(Branch(name, name, "missing"))
        elif vote == "!":
            out.append(Branch(name, name, "failed", error="boom"))
        else:
            out.append(Branch(name, name, "completed", output={"vote": vote, "confidence": kw.get(name, 1.0)}))
    return out


def test_collect_keeps_declared_order_and_lists_missing_and_failed():
    d = merge(
        MergeSpec(),
        [
            Branch("b", "x", "completed", output=2),
            Branch("a", "y", "completed", output=1),
            Branch("c", "z", "missing"),
            Branch("d", "w", "failed", error="boom"),
        ],
    )
    assert d.record["results"] == [2, 1]
    assert d.record["by_branch"] == {"b": 2, "a": 1}
    assert d.record["missing"] == ["c"]
    assert d.record["failed"] == [{"branch": "d", "error": "boom"}]


def test_majority_vote_with_decision_record():
    d = merge(MergeSpec(strategy="majority_vote"), votes(("a", "approve"), ("b", "reject"), ("c", "approve")))
    assert d.record["decision"] == "approve"
    assert d.record["tally"] == {"approve": 2, "reject": 1}
    assert d.record["votes"] == [
        {"branch": "a", "agent": "a", "vote": "approve", "weight": 1.0, "confidence": 1.0},
        {"branch": "b", "agent": "b", "vote": "reject", "weight": 1.0, "confidence": 1.0},
        {"branch": "c", "agent": "c", "vote": "approve", "weight": 1.0, "confidence": 1.0},
    ]
    assert d.record["reason"] == "approve leads with 2 votes (approve 2, reject 1)"


def test_weighted_vote_uses_weights_and_confidence():
    spec = MergeSpec(strategy="weighted_vote", weights={"legal": 3}, confidence_field="confidence")
    d = merge(spec, votes(("legal", "reject"), ("b", "approve"), ("c", "approve"), legal=0.9))
    assert d.record["decision"] == "reject"
    assert d.record["tally"] == {"reject": 2.7, "approve": 2.0}


def test_unanimous_and_its_failure_to_settle():
    assert merge(MergeSpec(strategy="unanimous"), votes(("a", "go"), ("b", "go"))).record["decision"] == "go"
    with pytest.raises(MergeError, match=r"no unanimity \(go 1, stop 1\) under unanimous"):
        merge(MergeSpec(strategy="unanimous"), votes(("a", "go"), ("b", "stop")))
    d = merge(MergeSpec(strategy="unanimous", tie_break="value", tie_value="stop"), votes(("a", "go"), ("b", "go2")))
    assert d.record["decision"] == "stop"


def test_veto_any_reject_wins():
    d = merge(MergeSpec(strategy="veto"), votes(("a", "approve"), ("b", "reject"), ("c", "approve"), ("d", "reject")))
    assert d.record["decision"] == "reject"
    assert d.record["reason"] == "vetoed by b, d (any reject wins)"
    assert merge(MergeSpec(strategy="veto"), votes(("a", "approve"), ("b", "approve"))).record["decision"] == "approve"


def test_priority_follows_declared_order_skipping_missing():
    spec = MergeSpec(strategy="priority", order=["legal", "budget", "tech"])
    d = merge(spec, votes(("tech", "approve"), ("budget", "reject"), ("legal", None)))
    assert d.record["decision"] == "reject"
    assert "'budget' has the highest priority" in d.record["reason"]
    assert d.record["missing"] == ["legal"]


@pytest.mark.parametrize("order", [["a", "b"], ["b", "a"]])
def test_tie_broken_by_declared_order_not_arrival(order):
    spec = MergeSpec(strategy="majority_vote", tie_break="order", order=order)
    d = merge(spec, votes(("a", "approve"), ("b", "reject")))
    assert d.record["tie"] is True
    assert d.record["decision"] == ("approve" if order[0] == "a" else "reject")


def test_tie_without_rule_fails_and_adjudicator_is_requested():
    with pytest.raises(MergeError, match="tie between approve, reject"):
        merge(MergeSpec(strategy="majority_vote"), votes(("a", "approve"), ("b", "reject")))
    d = merge(
        MergeSpec(strategy="majority_vote", tie_break="adjudicator", adjudicator="judge"),
        votes(("a", "approve"), ("b", "reject")),
    )
    assert d.needs_adjudication and d.record["decision"] is None
    assert [b["vote"] for b in d.ballots] == ["approve", "reject"]


def test_votes_need_at_least_one_ballot():
    with pytest.raises(MergeError, match="no branch produced a vote"):
        merge(MergeSpec(strategy="majority_vote"), votes(("a", None), ("b", "!")))


def test_spec_requires_what_a_rule_needs():
    with pytest.raises(ValueError, match="priority' needs order"):
        MergeSpec(strategy="priority")
    with pytest.raises(ValueError, match="tie_break 'adjudicator' needs adjudicator"):
        MergeSpec(tie_break="adjudicator")
