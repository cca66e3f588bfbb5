"""Merging the results of parallel branches into one decision record. Pure and deterministic:
branches are always considered in their declared order, never in order of arrival."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ensemble.logic.state import StateError, lookup
from ensemble.spec import MergeSpec


class MergeError(ValueError):
    """The strategy cannot produce a decision and no rule settles it."""


@dataclass
class Branch:
    """One branch's outcome, in declared order."""

    name: str
    agent: str
    status: str  # completed | failed | missing
    output: Any = None
    error: str | None = None


@dataclass
class Decision:
    record: dict[str, Any]
    needs_adjudication: bool = False
    ballots: list[dict[str, Any]] = field(default_factory=list)


def _key(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _field(output: Any, path: str | None) -> Any:
    if path is None:
        return None
    if isinstance(output, dict):
        try:
            return lookup(output, path)
        except StateError:
            return None
    return None


def ballots(spec: MergeSpec, branches: list[Branch]) -> list[dict[str, Any]]:
    out = []
    for b in branches:
        if b.status != "completed":
            continue
        vote = _field(b.output, spec.vote_field) if isinstance(b.output, dict) else b.output
        weight = spec.weights.get(b.name, 1.0)
        confidence = _field(b.output, spec.confidence_field)
        if isinstance(confidence, (int, float)) and not isinstance(confidence, bool):
            weight *= float(confidence)
        extra = b.output if isinstance(b.output, dict) else {}
        out.append({**extra, "branch": b.name, "agent": b.agent, "vote": vote, "weight": round(weight, 6)})
    return out


def merge(spec: MergeSpec, branches: list[Branch]) -> Decision:
    """The decision record for these branch outcomes (or a request to adjudicate)."""
    base: dict[str, Any] = {
        "strategy": spec.strategy,
        "missing": [b.name for b in branches if b.status == "missing"],
        "failed": [{"branch": b.name, "error": b.error} for b in branches if b.status == "failed"],
    }
    if spec.strategy == "collect":
        done = [b for b in branches if b.status == "completed"]
        return Decision({**base, "results": [b.output for b in done], "by_branch": {b.name: b.output for b in done}})

    votes = ballots(spec, branches)
    if not votes:
        raise MergeError(f"no branch produced a vote to merge under {spec.strategy}")
    tally: dict[str, float] = {}
    value_of: dict[str, Any] = {}
    for v in votes:
        k = _key(v["vote"])
        value_of.setdefault(k, v["vote"])
        tally[k] = tally.get(k, 0.0) + (v["weight"] if spec.strategy == "weighted_vote" else 1.0)
    shown = ("branch", "agent", "vote", "weight", "confidence", "reason")
    record = {
        **base,
        "votes": [{k: v[k] for k in shown if k in v} for v in votes],
        "tally": {k: round(t, 6) for k, t in tally.items()},
        "tie": False,
        "adjudicated": False,
    }
    described = ", ".join(f"{k} {tally[k]:g}" for k in tally)

    def decided(value: Any, reason: str) -> Decision:
        return Decision({**record, "decision": value, "reason": reason}, ballots=votes)

    if spec.strategy == "priority":
        rank = {name: i for i, name in enumerate(spec.order)}
        first = min(votes, key=lambda v: rank.get(v["branch"], len(rank)))
        return decided(first["vote"], f"'{first['branch']}' has the highest priority among the branches that voted")
    if spec.strategy == "veto":
        vetoes = [v["branch"] for v in votes if v["vote"] == spec.veto_value]
        if vetoes:
            return decided(spec.veto_value, f"vetoed by {', '.join(vetoes)} (any {_key(spec.veto_value)} wins)")
    if spec.strategy in ("veto", "unanimous"):
        if len(tally) == 1:
            return decided(votes[0]["vote"], f"unanimous: all {len(votes)} votes are {_key(votes[0]['vote'])}")
        return _settle(spec, record, votes, value_of, list(tally), f"no unanimity ({described})")
    top = max(tally.values())
    leaders = [k for k in tally if tally[k] == top]
    if len(leaders) == 1:
        unit = "weight" if spec.strategy == "weighted_vote" else "votes"
        return decided(value_of[leaders[0]], f"{leaders[0]} leads with {top:g} {unit} ({described})")
    return _settle(
        spec, {**record, "tie": True}, votes, value_of, leaders, f"tie between {', '.join(leaders)} ({described})"
    )


def _settle(
    spec: MergeSpec,
    record: dict[str, Any],
    votes: list[dict[str, Any]],
    value_of: dict[str, Any],
    candidates: list[str],
    why: str,
) -> Decision:
    """Apply the declared tie-break rule to an unsettled vote."""
    if spec.tie_break == "order":
        rank = {name: i for i, name in enumerate(spec.order)}
        ranked = sorted(
            (v for v in votes if _key(v["vote"]) in candidates), key=lambda v: rank.get(v["branch"], len(rank))
        )
        chosen = ranked[0]
        return Decision(
            {
                **record,
                "decision": chosen["vote"],
                "reason": f"{why}; settled by order: '{chosen['branch']}' ranks first",
            },
            ballots=votes,
        )
    if spec.tie_break == "value":
        return Decision(
            {
                **record,
                "decision": spec.tie_value,
                "reason": f"{why}; settled by the declared value {_key(spec.tie_value)}",
            },
            ballots=votes,
        )
    if spec.tie_break == "adjudicator":
        return Decision({**record, "decision": None, "reason": why}, needs_adjudication=True, ballots=votes)
    raise MergeError(
        f"{why} under {spec.strategy}, and no tie_break rule settles it (declare tie_break: order|value|adjudicator)"
    )
