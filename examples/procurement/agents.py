"""The agents of the procurement flow: five reviewers vote on a purchase request, an adjudicator decides.

budget_check, vendor_risk, legal_check, technical_fit and sustainability each return a Vote
(approve/reject, a confidence and a reason); the adjudicator settles a split. All are offline and
deterministic: explainable rules over the request, no model, network, randomness or clock.
"""

from __future__ import annotations

import re

from ensemble.authoring.agents import agent
from ensemble.examples.procurement.models import Adjudication, BallotView, Closing, FinalDecision, PurchaseRequest, Vote

# --- lists the rules use -----------------------------------------------------------------------

SANCTIONED_COUNTRIES: frozenset[str] = frozenset({"cuba", "iran", "north korea", "syria", "russia", "belarus"})
HIGH_RISK_COUNTRIES: frozenset[str] = frozenset(
    {
        "afghanistan",
        "haiti",
        "libya",
        "mali",
        "myanmar",
        "nicaragua",
        "somalia",
        "south sudan",
        "sudan",
        "venezuela",
        "yemen",
    }
)
_COUNTRY_ALIASES = {
    "cu": "cuba",
    "ir": "iran",
    "islamic republic of iran": "iran",
    "kp": "north korea",
    "dprk": "north korea",
    "democratic people's republic of korea": "north korea",
    "sy": "syria",
    "ru": "russia",
    "russian federation": "russia",
    "by": "belarus",
    "af": "afghanistan",
    "ht": "haiti",
    "ly": "libya",
    "ml": "mali",
    "mm": "myanmar",
    "burma": "myanmar",
    "ni": "nicaragua",
    "so": "somalia",
    "ss": "south sudan",
    "sd": "sudan",
    "ve": "venezuela",
    "ye": "yemen",
}
TRUSTED_CERTIFICATIONS = ("ISO 9001", "ISO 27001", "SOC 2")
BLOCKING_AGENTS = ("legal_check", "vendor_risk")
BLOCKING_CONFIDENCE = 0.8
COVERAGE_THRESHOLD = 0.8
ESG_THRESHOLD = 60.0
RENEWABLE_THRESHOLD = 50.0

_SEVERE_INCIDENT = re.compile(
    r"\b(?:breach|leak|fraud|brib\w*|corrupt\w*|sanction\w*|recall\w*|fine[ds]?|lawsuit|forced\s+labou?r"
    r"|bankrupt\w*)\b",
    re.I,
)
_ISO_14001 = re.compile(r"\biso\s*14001\b", re.I)
_LEGAL_ISSUES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (issue, re.compile(pattern, re.I))
    for issue, pattern in (
        ("auto-renewal", r"\bauto(?:matic(?:ally)?)?[\s-]*renew\w*|\brenew\w*\s+automatically|\bevergreen\b"),
        (
            "unlimited liability",
            r"\b(?:unlimited|uncapped)\s+liability\b"
            r"|\bliability\b[^.;]*\b(?:unlimited|uncapped|without\s+(?:a\s+|any\s+)?(?:cap|limit))\b",
        ),
        (
            "exclusivity",
            r"(?<!non-)(?<!non )\bexclusiv\w*\s+"
            r"(?:supplier|provider|vendor|partner|rights?|agreement|dealing|supply|purchas\w*)"
            r"|\bexclusivity\b|\bexclusively\s+(?:from|with|through)|\bsole\s+(?:supplier|source|provider)",
        ),
    )
)
_NEGATED_TERM = re.compile(
    r"\b(?:no|not|without|never|excluding)\s+(?:\w+[\s-]+){0,2}?(?:auto|unlimited|uncapped|exclusiv)", re.I
)
_TOKEN = re.compile(r"[a-z0-9]+(?:[.-][a-z0-9]+)*")
_QUANTITY = re.compile(
    r"(?<![\w.])(\d+(?:\.\d+)?)\s*(gb|tb|mb|ghz|mhz|mah|wh|kg|g|mm|cm|m|h|hrs?|hours?|min|minutes?|days?|years?"
    r"|inch(?:es)?|in|\"|w|v|%|nits|dpi|ppm)?(?![\w.])",
    re.I,
)
_UNITS = {
    "hrs": "h",
    "hr": "h",
    "hour": "h",
    "hours": "h",
    "minutes": "min",
    "minute": "min",
    "days": "day",
    "years": "year",
    "inches": "inch",
    "in": "inch",
    '"': "inch",
}
_AT_MOST = re.compile(r"\b(?:max(?:imum)?|under|below|less|most|weigh\w*|latency|noise)\b|[<≤]", re.I)
_DELIVERY = re.compile(r"\bdeliver\w*\b", re.I)
_STOPWORDS = frozenset(
    "a an and at by for from in of on or per the to with min minimum least up max maximum under below less than"
    " most within".split()
)


def _country(name: str) -> str:
    key = " ".join(name.lower().replace(".", "").split())
    return _COUNTRY_ALIASES.get(key, key)


def _vote(decision: str, confidence: float, reason: str) -> Vote:
    confidence = round(min(0.99, max(0.0, confidence)), 2)
    return Vote(vote=decision, confidence=confidence, reason=reason)


@agent(
    name="budget_check",
    description="Approves a purchase that fits the remaining budget and is justified.",
    timeout_s=30,
)
def budget_check(data: PurchaseRequest) -> Vote:
    """Approves a purchase that fits the remaining budget and is justified.

    Total = quantity × unit price. Over the remaining budget: reject (0.95 when more than 10%
    over, else 0.85). A justification under five words: reject (0.7). Otherwise approve, more
    confidently the more headroom is left: 0.95 when the purchase takes at most half of the
    remaining budget, 0.85 up to 80%, 0.7 above.
    """
    total, budget = data.total, data.budget_remaining
    spend = f"{total:,.2f} {data.currency} against {budget:,.2f} {data.currency} remaining"
    if total > budget:
        over = (total - budget) / budget if budget > 0 else float("inf")
        return _vote("reject", 0.95 if over > 0.10 else 0.85, f"over budget: {spend}")
    if len(data.justification.split()) < 5:
        return _vote("reject", 0.7, f"within budget ({spend}) but the justification is missing or too short")
    share = total / budget if budget > 0 else 1.0
    confidence = 0.95 if share <= 0.5 else 0.85 if share <= 0.8 else 0.7
    return _vote("approve", confidence, f"within budget: {spend} ({share:.0%} of what is left), justified")


@agent(
    name="vendor_risk",
    description="Rejects vendors in sanctioned countries, and vendors whose incidents, age and country add up to risk.",
    timeout_s=30,
)
def vendor_risk(data: PurchaseRequest) -> Vote:
    """Rejects vendors in sanctioned countries, and vendors whose incidents, age and country add up to risk.

    A sanctioned country (Cuba, Iran, North Korea, Syria, Russia, Belarus; names or ISO codes)
    rejects at 0.99. Otherwise risk points add up: 3 per severe incident (breach, fraud, fine,
    recall, lawsuit...), 2 per other incident, 2 for under 2 years in business (1 for under 5),
    3 for a high-risk country, 1 for no certification at all, minus 1 for any of ISO 9001,
    ISO 27001 or SOC 2. Four points or more reject (confidence 0.55 + 0.1 per point, at most
    0.95); fewer approve (0.95 - 0.1 per point).
    """
    vendor = data.vendor
    country = _country(vendor.country)
    if country in SANCTIONED_COUNTRIES:
        extra = f"; also {len(vendor.incidents)} incident(s)" if vendor.incidents else ""
        where = vendor.country if country == vendor.country.lower() else f"{vendor.country} ({country.title()})"
        return _vote("reject", 0.99, f"{vendor.name} is based in {where}, a sanctioned country{extra}")
    points, factors = 0, []
    for incident in vendor.incidents:
        severe = bool(_SEVERE_INCIDENT.search(incident))
        points += 3 if severe else 2
        factors.append(f"{'severe ' if severe else ''}incident: {incident}")
    if vendor.years_in_business < 2:
        points += 2
        factors.append(f"only {vendor.years_in_business} year(s) in business")
    elif vendor.years_in_business < 5:
        points += 1
        factors.append(f"{vendor.years_in_business} years in business")
    if country in HIGH_RISK_COUNTRIES:
        points += 3
        factors.append(f"high-risk country ({vendor.country})")
    held = " | ".join(vendor.certifications).lower()
    certified = [cert for cert in TRUSTED_CERTIFICATIONS if cert.lower() in held]
    if not vendor.certifications:
        points += 1
        factors.append("no certifications")
    if certified and points:
        points -= 1
        factors.append(f"mitigated by {', '.join(certified)}")
    summary = "; ".join(factors) if factors else f"{vendor.years_in_business} years in business, no incidents"
    if points >= 4:
        return _vote("reject", min(0.95, 0.55 + 0.1 * points), f"vendor risk {points} points: {summary}")
    return _vote("approve", 0.95 - 0.1 * points, f"vendor risk {points} points: {summary}")


@agent(
    name="legal_check",
    description="Rejects contract terms with auto-renewal, unlimited liability or exclusivity.",
    timeout_s=30,
)
def legal_check(data: PurchaseRequest) -> Vote:
    """Rejects contract terms with auto-renewal, unlimited liability or exclusivity.

    Each term is checked on its own; negated terms ("no automatic renewal", "non-exclusive")
    pass. One problem rejects at 0.9, two or more at 0.95. Clean terms approve at 0.9; no terms
    at all approve at 0.6 (the standard purchase terms apply, nothing was reviewed).
    """
    problems: list[str] = []
    for term in data.contract_terms:
        if _NEGATED_TERM.search(term):
            continue
        problems.extend(f"{issue} ('{term}')" for issue, pattern in _LEGAL_ISSUES if pattern.search(term))
    if problems:
        confidence = 0.95 if len(problems) > 1 else 0.9
        return _vote("reject", confidence, "unacceptable contract terms: " + "; ".join(problems))
    if not data.contract_terms:
        return _vote("approve", 0.6, "no contract terms given; standard purchase terms apply")
    return _vote("approve", 0.9, f"{len(data.contract_terms)} contract terms reviewed, none problematic")


def _spec(text: str) -> tuple[set[str], dict[str, float]]:
    """The words (plural 's' dropped) and unit -> number quantities of a specification line."""
    lowered = text.lower()
    quantities: dict[str, float] = {}
    for match in _QUANTITY.finditer(lowered):
        unit = (match[2] or "").lower()
        quantities[_UNITS.get(unit, unit)] = float(match[1])
    words = _QUANTITY.sub(" ", lowered)
    tokens = {token.rstrip("s") if len(token) > 3 else token for token in _TOKEN.findall(words)}
    return tokens - _STOPWORDS, quantities


def _covered(requirement: str, data: PurchaseRequest) -> bool:
    words, needed = _spec(requirement)
    if _DELIVERY.search(requirement) and "day" in needed:
        return data.delivery_days is not None and data.delivery_days <= needed["day"]
    at_most = bool(_AT_MOST.search(requirement))
    for offer in data.offered:
        offered_words, offered = _spec(offer)
        if not words <= offered_words:
            continue
        if all(
            unit in offered and (offered[unit] <= value if at_most else offered[unit] >= value)
            for unit, value in needed.items()
        ):
            return True
    return False


@agent(
    name="technical_fit",
    description="Approves when the vendor's offered specifications cover at least 80% of the requirements.",
    timeout_s=30,
)
def technical_fit(data: PurchaseRequest) -> Vote:
    """Approves when the vendor's offered specifications cover at least 80% of the requirements.

    A requirement is covered by an offered spec line that has all its words and meets its
    numbers in the same unit: at least as much ("battery 10 hours" covers "battery 8 hours"),
    or at most for max/under/weight requirements. "Delivery within N days" is checked against
    `delivery_days`. Confidence is 0.5 + half the coverage when approving, 0.5 + half the gap
    when rejecting; no requirements approve at 0.5.
    """
    if not data.requirements:
        return _vote("approve", 0.5, "no requirements stated; nothing to check")
    missing = [requirement for requirement in data.requirements if not _covered(requirement, data)]
    covered = len(data.requirements) - len(missing)
    coverage = covered / len(data.requirements)
    reason = f"covers {covered}/{len(data.requirements)} requirements ({coverage:.0%})"
    if missing:
        reason += "; not met: " + ", ".join(missing)
    if coverage >= COVERAGE_THRESHOLD:
        return _vote("approve", min(0.95, 0.5 + coverage / 2), reason)
    return _vote("reject", min(0.95, 0.5 + (1 - coverage) / 2), reason)


@agent(
    name="sustainability",
    description="Approves vendors with an ESG score of 60+, 50%+ renewable energy or ISO 14001.",
    timeout_s=30,
)
def sustainability(data: PurchaseRequest) -> Vote:
    """Approves vendors with an ESG score of 60+, 50%+ renewable energy or ISO 14001.

    Any one criterion approves: at 0.7 with one, 0.85 with two, 0.95 with all three. Otherwise
    reject: 0.6 when there is no evidence at all, 0.85 when the ESG score is under 40 or
    renewables under 20%, else 0.75.
    """
    vendor = data.vendor
    met, seen = [], []
    if vendor.esg_score is not None:
        seen.append(f"ESG score {vendor.esg_score:g}")
        if vendor.esg_score >= ESG_THRESHOLD:
            met.append(f"ESG score {vendor.esg_score:g} >= {ESG_THRESHOLD:g}")
    if vendor.renewable_energy_pct is not None:
        seen.append(f"{vendor.renewable_energy_pct:g}% renewable energy")
        if vendor.renewable_energy_pct >= RENEWABLE_THRESHOLD:
            met.append(f"{vendor.renewable_energy_pct:g}% renewable energy >= {RENEWABLE_THRESHOLD:g}%")
    if any(_ISO_14001.search(cert) for cert in vendor.certifications):
        met.append("ISO 14001 certified")
    if met:
        return _vote("approve", {1: 0.7, 2: 0.85}.get(len(met), 0.95), "; ".join(met))
    if not seen:
        return _vote("reject", 0.6, "no sustainability evidence: no ESG score, renewable share or ISO 14001")
    poor = (vendor.esg_score is not None and vendor.esg_score < 40) or (
        vendor.renewable_energy_pct is not None and vendor.renewable_energy_pct < 20
    )
    reason = f"below every threshold: {', '.join(seen)}, no ISO 14001"
    return _vote("reject", 0.85 if poor else 0.75, reason)


def _base_name(agent_name: str) -> str:
    return re.split(r"[.:/]", agent_name)[-1]


def _ballot(ballot: BallotView) -> str:
    return f"{ballot.agent} ({ballot.confidence:.2f}): {ballot.reason}"


@agent(
    name="adjudicator",
    description=(
        "Settles a split vote: a confident legal or vendor-risk reject blocks, otherwise the weighted tally wins."
    ),
    timeout_s=30,
)
def adjudicator(data: Adjudication) -> Vote:
    """Settles a split vote: a confident legal or vendor-risk reject blocks, otherwise the weighted tally wins.

    A reject from legal_check or vendor_risk with confidence >= 0.8 blocks the purchase (the
    decision's confidence is the highest blocking one). Otherwise each vote counts confidence ×
    weight; the larger side wins, a tie rejects, and the confidence is the winner's share of the
    total. Ballots are read in agent-name order, so their order does not matter. No votes reject.
    """
    ballots = sorted(data.votes, key=lambda ballot: (ballot.agent, ballot.vote, ballot.confidence, ballot.reason))
    if not ballots:
        return _vote("reject", 0.5, f"{data.request.id}: no votes were cast")
    approvals = [ballot for ballot in ballots if ballot.vote == "approve"]
    rejections = [ballot for ballot in ballots if ballot.vote != "approve"]
    approve_score = round(sum(ballot.confidence * ballot.weight for ballot in approvals), 4)
    reject_score = round(sum(ballot.confidence * ballot.weight for ballot in rejections), 4)
    tally = (
        f"{len(approvals)} approve / {len(rejections)} reject; weighted approve {approve_score:.2f}"
        f" vs reject {reject_score:.2f}"
    )
    blocking = [
        ballot
        for ballot in rejections
        if _base_name(ballot.agent) in BLOCKING_AGENTS and ballot.confidence >= BLOCKING_CONFIDENCE
    ]
    if blocking:
        confidence = max(ballot.confidence for ballot in blocking)
        reason = f"{data.request.id} rejected: blocked by " + "; ".join(_ballot(ballot) for ballot in blocking)
        return _vote("reject", confidence, f"{reason} (a {BLOCKING_CONFIDENCE:.1f}+ reject blocks; {tally})")
    total = approve_score + reject_score
    if approve_score > reject_score:
        dissent = "; dissent: " + "; ".join(_ballot(ballot) for ballot in rejections) if rejections else ""
        return _vote("approve", approve_score / total, f"{data.request.id} approved: {tally}{dissent}")
    outvoted = "; outvoted: " + "; ".join(_ballot(ballot) for ballot in approvals) if approvals else ""
    share = reject_score / total if total else 0.5
    return _vote("reject", share, f"{data.request.id} rejected: {tally}{outvoted}")


@agent(
    name="finalize",
    description="Records the final decision: the vote's, or the purchasing committee's on a split vote.",
)
def finalize(data: Closing) -> FinalDecision:
    """The final decision on a purchase.

    Without a committee gate (the vote was unanimous) the vote's decision stands. When the vote was
    split, the committee decided the purchase: approved buys, rejected (or no decision in time) does
    not, and the adjudicator's recommendation stays on the record as the reason's context.
    """
    gate = data.committee or {}
    status = gate.get("status", "skipped")
    if status == "skipped":
        return FinalDecision(decision=data.decision, reason=data.reason, decided_by="agents (unanimous)")
    decided = "approve" if status == "approved" else "reject"
    who = "timeout" if gate.get("decided_by") == "timeout" else f"purchasing committee ({gate.get('decided_by')})"
    comment = f": {gate['comment']}" if gate.get("comment") else ""
    past = {"approve": "approved", "reject": "rejected"}[decided]
    reason = f"{data.request} {past} by {who}{comment}; the adjudicator recommended {data.decision} ({data.reason})"
    return FinalDecision(decision=decided, reason=reason, decided_by=who)
