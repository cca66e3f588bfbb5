"""The agents of the contract_review flow.

planner -> clause_extractor -> risk_rater (risk_rater_basic when re-planning) -> compliance_checker
-> summarizer. All offline and deterministic: pure functions of their input, plus the read-only
compliance rules database `compliance.db` next to this module.
"""

from __future__ import annotations

from pathlib import Path

from ensemble.authoring.agents import agent
from ensemble.examples.contract_review.clauses import normalize, quote, sentences, split_clauses
from ensemble.examples.contract_review.compliance import DB_PATH, load_rules
from ensemble.examples.contract_review.models import (
    Clause,
    ClauseBatch,
    Clauses,
    ContractSummary,
    ContractText,
    Finding,
    Findings,
    Flag,
    Level,
    Plan,
    PlanRequest,
    Rating,
    RatingBatch,
    Ratings,
    Severity,
    Subtask,
    SummaryInput,
)
from ensemble.examples.contract_review.rules import BASIC_KEYWORDS, LEVEL_RANK, TOPICS

COMPLIANCE_DB: Path = DB_PATH
_SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high")


@agent(
    name="planner",
    description="Plans the review of a contract: extract clauses, rate them, check the risky ones, summarise.",
    timeout_s=30,
)
def planner(data: PlanRequest) -> Plan:
    """Plans the review of a contract: extract clauses, rate them, check the risky ones, summarise.

    The plan is always the same four subtasks, wired with templates the engine resolves:
    `extract` (clause_extractor) -> `rate` (risk_rater, once per clause, in parallel) -> `check`
    (compliance_checker) -> `summarize` (summarizer, which also reads the ratings). When
    `failures` is non-empty this is a re-plan after a failure, and `rate` uses risk_rater_basic,
    the keyword-only fallback.
    """
    replanning = bool(data.failures)
    rater = "risk_rater_basic" if replanning else "risk_rater"
    subtasks = [
        Subtask(id="extract", agent="clause_extractor", input={"text": "$input.text"}),
        Subtask(
            id="rate",
            agent=rater,
            for_each="$results.extract.clauses",
            input={"clauses": ["$item"]},
            depends_on=["extract"],
        ),
        Subtask(
            id="check",
            agent="compliance_checker",
            input={"ratings": "$results.rate.*.ratings.0"},
            depends_on=["rate"],
        ),
        Subtask(
            id="summarize",
            agent="summarizer",
            input={"ratings": "$results.rate.*.ratings.0", "findings": "$results.check.findings"},
            depends_on=["rate", "check"],
        ),
    ]
    lines = len([line for line in data.text.splitlines() if line.strip()])
    source = f"'{data.filename}'" if data.filename else "the contract"
    rationale = (
        f"Review {source} ({lines} non-empty lines): split it into clauses, rate each clause's risk,"
        " check the clauses rated above 'none' against the compliance rules database, then summarise"
        " the risky clauses for legal review."
    )
    if data.notes:  # the review came back from legal: the summary must answer the reviewer
        subtasks[-1].input["notes"] = data.notes
        rationale += f" Revised after the legal reviewer asked: {data.notes}"
    if replanning:
        rationale += (
            f" Re-plan after {len(data.failures)} failure(s) ({'; '.join(data.failures)}):"
            " risk_rater is replaced by risk_rater_basic, the simpler keyword-only rater."
        )
    return Plan(subtasks=subtasks, rationale=rationale)


@agent(
    name="clause_extractor",
    description="Splits a contract into its numbered clauses, each with its number, heading title and text.",
    timeout_s=30,
)
def clause_extractor(data: ContractText) -> Clauses:
    """Splits a contract into its numbered clauses, each with its number, heading title and text.

    Headings: "4. LIMITATION OF LIABILITY", "4.2 Fees", "Section 4 - Fees", "Clause 7 –
    Confidentiality", "Article IV" (with the title on the next line), "§ 3 Fees", or inline
    ("4. Liability. The Supplier..."). Numbered paragraphs that read like sentences ("4.1 The
    Customer shall...") stay inside their clause, and the shallowest level of titled headings
    is the clause level. The preamble before the first clause, the signature block and any
    schedules are skipped. Without titled headings the top-level numbers (else the paragraphs)
    are the clauses, titled with their first words.
    """
    return Clauses(clauses=split_clauses(data.text))


def _rate(clause: Clause) -> Rating:
    text = normalize(clause.text)
    parts = sentences(text)
    found = []
    for order, (category, cue, assess) in enumerate(TOPICS):
        titled = bool(cue.search(clause.title))
        assessment = assess(text, parts, titled)
        if assessment:
            level, reason = assessment
            found.append((LEVEL_RANK[level], titled, -order, category, level, reason))
    if not found:
        return Rating(
            clause=clause.number,
            title=clause.title,
            category="other",
            level="none",
            reason="no risk indicators",
            text=clause.text,
        )
    found.sort(reverse=True)
    _, _, _, category, level, reason = found[0]
    others = [f"{other_reason} ({other_level})" for rank, _, _, _, other_level, other_reason in found[1:] if rank]
    if others:
        reason += "; also: " + "; ".join(others)
    return Rating(
        clause=clause.number, title=clause.title, category=category, level=level, reason=reason, text=clause.text
    )


@agent(
    name="risk_rater",
    description="Rates each clause's risk (none/low/medium/high) and names its main topic and why.",
    timeout_s=30,
)
def risk_rater(data: ClauseBatch) -> Ratings:
    """Rates each clause's risk (none/low/medium/high) and names its main topic and why.

    Each topic has a heading cue and an assessor that reads the clause's sentences: liability
    (uncapped = high, a cap under 12 months of fees = medium, a cap = none), auto_renewal (90+
    days' notice to stop it = high), termination (for convenience by one party only = high,
    mutual = none), indemnity (one-sided = high, mutual = low), data_transfer (personal data
    abroad without SCCs/adequacy = high, with = low), fee_change (unilateral and uncapped =
    high), governing_law (outside the allow-list = high), confidentiality (perpetual =
    medium), payment (late interest above 12% a year = medium, above 20% = high), ip
    (pre-existing IP assigned = high), exclusivity and non_solicitation. The clause gets its
    highest-rated topic (the heading's topic wins ties); other risky topics are added to the
    reason. A clause with none of them is `other`/`none`.
    """
    return Ratings(ratings=[_rate(clause) for clause in data.clauses])


@agent(
    name="risk_rater_basic",
    description="Keyword-only fallback rater: medium if a clause mentions a risky topic, else none.",
    timeout_s=30,
)
def risk_rater_basic(data: ClauseBatch) -> Ratings:
    """Keyword-only fallback rater: medium if a clause mentions a risky topic, else none.

    The category is the first topic whose keyword appears in the heading or text (liability,
    indemnity, renewal, termination, personal data or transfer, fee increase, governing law,
    confidentiality, interest, intellectual property, exclusivity, solicitation). Same output
    shape as risk_rater, without its nuance: a capped liability clause is `medium` too.
    """
    ratings = []
    for clause in data.clauses:
        text = normalize(f"{clause.title}. {clause.text}")
        hit = next(((category, match) for category, pattern in BASIC_KEYWORDS if (match := pattern.search(text))), None)
        if hit:
            category, match = hit
            level: Level = "medium"
            reason = f"mentions {category.replace('_', ' ')} ('{match[0]}'); keyword check only"
        else:
            category, level, reason = "other", "none", "no risky keywords"
        ratings.append(
            Rating(
                clause=clause.number,
                title=clause.title,
                category=category,
                level=level,
                reason=reason,
                text=clause.text,
            )
        )
    return Ratings(ratings=ratings)


def _sentence_at(text: str, position: int, limit: int = 160) -> str:
    start = max(text.rfind(". ", 0, position), text.rfind("; ", 0, position))
    start = 0 if start < 0 else start + 2
    ends = [index for index in (text.find(". ", position), text.find("; ", position)) if index >= 0]
    return quote(text[start : min(ends) + 1 if ends else len(text)].strip(), limit)


@agent(
    name="compliance_checker",
    description="Checks the clauses rated above 'none' against the rules in the compliance database.",
    timeout_s=30,
)
def compliance_checker(data: RatingBatch) -> Findings:
    """Checks the clauses rated above 'none' against the rules in the compliance database.

    The rules come from the SQLite database `compliance.db` next to this module, opened
    read-only: table `rules(id, category, pattern, absent_pattern, severity, description,
    guidance)`. A rule fires on a clause when its case-insensitive regex `pattern` matches the
    clause text (whitespace collapsed) and its `absent_pattern`, if any, does not (e.g. a data
    transfer with no "standard contractual clauses"). Every rule is tried on every risky clause,
    so a renewal term inside a termination clause is still caught. Findings are in clause order,
    then rule id; each quotes the sentence that triggered it.
    """
    rules = load_rules(COMPLIANCE_DB)
    findings = []
    for rating in data.ratings:
        if rating.level == "none":
            continue
        text = normalize(rating.text)
        for rule in rules:
            match = rule.match(text)
            if match is None:
                continue
            position = match.start("hit") if "hit" in rule.pattern.groupindex else match.start()
            if text[position : position + 2] in (". ", "; "):
                position += 2
            findings.append(
                Finding(
                    clause=rating.clause,
                    rule_id=rule.id,
                    rule=rule.description,
                    category=rule.category,
                    severity=rule.severity,
                    reason=f"{rule.guidance} Triggered by: “{_sentence_at(text, position)}”",
                )
            )
    return Findings(findings=findings)


@agent(
    name="summarizer",
    description=(
        "Summarises a contract review: one flag per risky clause, an overall level and whether legal must review it."
    ),
    timeout_s=30,
)
def summarizer(data: SummaryInput) -> ContractSummary:
    """Summarises a contract review: one flag per risky clause, an overall level and whether legal must review it.

    A clause is flagged when it is rated above `none` or has compliance findings; its level is
    the highest of its rating and its findings' severities, and its reason is the rating's
    reason followed by the rules it breaks. Harmless clauses are not flagged. `overall` is the
    highest flag level (low when nothing is flagged); any high flag requires legal review.
    `counts` has the clauses, flags per level, and findings.
    """
    by_clause: dict[str, list[Finding]] = {}
    for finding in data.findings:
        by_clause.setdefault(finding.clause, []).append(finding)
    flags: list[Flag] = []
    seen: set[str] = set()
    for rating in data.ratings:
        findings = by_clause.get(rating.clause, [])
        seen.add(rating.clause)
        if rating.level == "none" and not findings:
            continue
        levels = ([rating.level] if rating.level != "none" else []) + [finding.severity for finding in findings]
        level = max(levels, key=LEVEL_RANK.__getitem__)
        category = rating.category
        if rating.level == "none":
            category = max(findings, key=lambda finding: LEVEL_RANK[finding.severity]).category
        reasons = ([rating.reason] if rating.level != "none" else []) + [f"{f.rule_id}: {f.rule}" for f in findings]
        flags.append(
            Flag(clause=rating.clause, title=rating.title, category=category, level=level, reason="; ".join(reasons))
        )
    for clause, findings in by_clause.items():
        if clause not in seen:  # findings for a clause the ratings do not cover
            worst = max(findings, key=lambda finding: LEVEL_RANK[finding.severity])
            reason = "; ".join(f"{f.rule_id}: {f.rule}" for f in findings)
            title = f"Clause {clause}"
            flags.append(Flag(clause=clause, title=title, category=worst.category, level=worst.severity, reason=reason))

    counts = {"clauses": len(data.ratings), "flagged": len(flags), "findings": len(data.findings)}
    counts.update({level: sum(flag.level == level for flag in flags) for level in _SEVERITIES})
    overall: Severity = max((flag.level for flag in flags), key=LEVEL_RANK.__getitem__, default="low")
    high = [flag for flag in flags if flag.level == "high"]
    summary = (
        f"Reviewed {counts['clauses']} clauses: {counts['flagged']} flagged ({counts['high']} high,"
        f" {counts['medium']} medium, {counts['low']} low) with {counts['findings']} compliance findings."
    )
    if high:
        summary += " High risk: " + "; ".join(f"clause {f.clause} {f.title} ({f.category})" for f in high) + "."
        summary += " Legal review required before signing."
    elif flags:
        summary += " No high risks; the flagged clauses are worth a negotiation note."
    else:
        summary += " No risky clauses found."
    if data.notes:
        summary += f" Revised for the reviewer's request: {data.notes}"
    return ContractSummary(
        flags=flags, overall=overall, counts=counts, summary=summary, requires_legal_review=bool(high)
    )
