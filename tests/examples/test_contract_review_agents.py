"""The contract_review agents, called directly: the bundled contracts and contracts they have never seen."""

from __future__ import annotations

import inspect
import json
import sqlite3
from pathlib import Path

import pytest

from ensemble.authoring.agents import get_agent
from ensemble.examples.contract_review import agents as contract_agents
from ensemble.examples.contract_review.agents import (
    clause_extractor,
    compliance_checker,
    planner,
    risk_rater,
    risk_rater_basic,
    summarizer,
)
from ensemble.examples.contract_review.compliance import DB_PATH, SQL_PATH, build_db, load_rules, read_rows
from ensemble.examples.contract_review.models import (
    Clause,
    ClauseBatch,
    ContractSummary,
    ContractText,
    Finding,
    PlanRequest,
    Rating,
    RatingBatch,
    SummaryInput,
)
from ensemble.examples.contract_review.rules import ALLOWED_JURISDICTIONS

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "contract_review"


def sample(name: str) -> str:
    return (EXAMPLE / name).read_text(encoding="utf-8")


def clauses_of(text: str) -> list[Clause]:
    return clause_extractor(ContractText(text=text)).clauses


def rate(text: str, title: str = "Clause", number: str = "1") -> Rating:
    return risk_rater(ClauseBatch(clauses=[Clause(number=number, title=title, text=text)])).ratings[0]


def check(text: str, level: str = "high", number: str = "1") -> list[str]:
    rating = Rating(clause=number, title="Clause", category="other", level=level, reason="test", text=text)
    return [finding.rule_id for finding in compliance_checker(RatingBatch(ratings=[rating])).findings]


def review(text: str) -> tuple[list[Rating], list[Finding], ContractSummary]:
    ratings = risk_rater(ClauseBatch(clauses=clauses_of(text))).ratings
    findings = compliance_checker(RatingBatch(ratings=ratings)).findings
    return ratings, findings, summarizer(SummaryInput(ratings=ratings, findings=findings))


# --- the bundled files -------------------------------------------------------------------------

CONTRACT_TITLES = [
    "DEFINITIONS",
    "SERVICES",
    "TERM AND RENEWAL",
    "FEES AND PAYMENT",
    "PRICE CHANGES",
    "CONFIDENTIALITY",
    "DATA PROTECTION",
    "INTELLECTUAL PROPERTY",
    "INDEMNITY",
    "LIMITATION OF LIABILITY",
    "TERMINATION",
    "NOTICES",
    "GOVERNING LAW AND JURISDICTION",
    "ENTIRE AGREEMENT",
    "HEADINGS",
    "COUNTERPARTS",
]

# clause -> (category, level, rule ids)
CONTRACT_EXPECTED = {
    "1": ("other", "none", []),
    "2": ("other", "none", []),
    "3": ("auto_renewal", "high", ["REN-001", "REN-002"]),
    "4": ("payment", "medium", ["PAY-001"]),
    "5": ("fee_change", "high", ["FEE-001"]),
    "6": ("confidentiality", "none", []),
    "7": ("data_transfer", "high", ["DATA-001", "DATA-002"]),
    "8": ("ip", "none", []),
    "9": ("indemnity", "high", ["IND-001"]),
    "10": ("liability", "high", ["LIAB-001", "LIAB-002"]),
    "11": ("termination", "high", ["TERM-001"]),
    "12": ("other", "none", []),
    "13": ("governing_law", "high", ["LAW-001"]),
    "14": ("other", "none", []),
    "15": ("other", "none", []),
    "16": ("other", "none", []),
}


def test_sample_contracts_have_a_realistic_length() -> None:
    assert 80 <= len(sample("contract.txt").splitlines()) <= 150
    assert 25 <= len(sample("contract_short.txt").splitlines()) <= 40


def test_input_json_is_the_contract() -> None:
    payload = json.loads((EXAMPLE / "input.json").read_text(encoding="utf-8"))
    assert payload == {"text": sample("contract.txt"), "filename": "contract.txt"}
    assert PlanRequest.model_validate(payload).failures == []


def test_agents_are_registered_with_their_docstring_descriptions() -> None:
    for name in ("planner", "clause_extractor", "risk_rater", "risk_rater_basic", "compliance_checker", "summarizer"):
        spec = get_agent(name)
        assert spec is not None and spec.handler == f"ensemble.examples.contract_review.agents:{name}"
        assert spec.description == inspect.getdoc(getattr(contract_agents, name)).split("\n\n")[0]
        assert spec.timeout_s == 30 and spec.input_schema and spec.output_schema


# --- clause_extractor --------------------------------------------------------------------------


def test_extractor_splits_the_sample_contract() -> None:
    clauses = clauses_of(sample("contract.txt"))
    assert [clause.number for clause in clauses] == [str(n) for n in range(1, 17)]
    assert [clause.title for clause in clauses] == CONTRACT_TITLES
    assert clauses[0].text.startswith('1.1 "Services" means')  # sub-paragraphs stay in their clause
    assert '1.4 "Fees" means' in clauses[0].text
    assert clauses[9].text.count("10.") == 4
    assert clauses[-1].text.endswith("constitute one agreement.")  # the signature block is cut off
    assert all("Meridian Data Systems Ltd, a company" not in clause.text for clause in clauses)  # preamble skipped


def test_extractor_splits_the_short_contract() -> None:
    clauses = clauses_of(sample("contract_short.txt"))
    assert [(clause.number, clause.title) for clause in clauses] == [
        ("1", "Scope of Work"),
        ("2", "Fees"),
        ("3", "Limitation of Liability"),
        ("4", "Termination"),
        ("5", "Non-Solicitation"),
        ("6", "Hosting of Records"),
        ("7", "Governing Law"),
    ]
    assert clauses[1].text.startswith("The Client will pay a fixed fee")


UNSEEN_ARTICLES = """SOFTWARE LICENCE AGREEMENT

This Agreement is between Orbis Software GmbH ("Licensor") and Tidewater Foods Ltd ("Licensee").

ARTICLE I
DEFINITIONS
In this Agreement "Software" means the Orbis planning suite.

ARTICLE II – LICENCE GRANT
Licensor grants Licensee a non-exclusive licence to use the Software at:
1. the Licensee's head office; and
2. its warehouses.

Article III: Fees
Licensee shall pay the annual fee within 30 days.

Article IV
Term and Termination
This Agreement lasts 12 months.

SCHEDULE 1 - PRICES
1. Annual fee: EUR 12,000
"""


def test_extractor_reads_article_headings_it_has_never_seen() -> None:
    clauses = clauses_of(UNSEEN_ARTICLES)
    assert [(clause.number, clause.title) for clause in clauses] == [
        ("I", "DEFINITIONS"),
        ("II", "LICENCE GRANT"),
        ("III", "Fees"),
        ("IV", "Term and Termination"),
    ]
    assert clauses[1].text.endswith("2. its warehouses.")  # a numbered list restarting at 1 is not a clause
    assert clauses[3].text == "This Agreement lasts 12 months."  # the schedule is not part of the last clause


def test_extractor_reads_clause_and_section_keywords_and_inline_titles() -> None:
    text = (
        "Clause 1 – Services\nThe Vendor will supply cleaning services.\n"
        "Clause 2 - Payment: The Client pays within 14 days.\n"
        "Section 3. Liability. Each party's liability shall not exceed EUR 50,000.\n"
        "Section 3 of this agreement survives termination.\n"
        "4. LIMITATION OF ACTIONS\nClaims must be brought within one year.\n"
    )
    clauses = clauses_of(text)
    assert [(clause.number, clause.title) for clause in clauses] == [
        ("1", "Services"),
        ("2", "Payment"),
        ("3", "Liability"),
        ("4", "LIMITATION OF ACTIONS"),
    ]
    assert clauses[1].text == "The Client pays within 14 days."
    assert clauses[2].text.endswith("Section 3 of this agreement survives termination.")  # a reference, not a heading


def test_extractor_uses_the_shallowest_titled_level_and_skips_a_table_of_contents() -> None:
    text = (
        "CONTENTS\n1. Definitions\n2. Services\n\n"
        "1. Definitions\n1.1 Interpretation\nWords have their ordinary meaning.\n"
        "2. Services\n2.1 Scope\nThe Supplier shall provide support.\n"
        "12 months after the start the parties shall meet.\n"
    )
    clauses = clauses_of(text)
    assert [(clause.number, clause.title) for clause in clauses] == [("1", "Definitions"), ("2", "Services")]
    assert clauses[1].text.startswith("2.1 Scope") and clauses[1].text.endswith("the parties shall meet.")


def test_extractor_reads_unpunctuated_capitalised_headings() -> None:
    text = (
        "SUPPLY AGREEMENT\n\n1 DEFINITIONS\nTerms have their usual meaning.\n\n2 SUPPLY\nThe Seller shall supply"
        " the Goods for\n12 months from the start date.\n\n3\tPRICE\nThe Seller may adjust the prices.\n"
    )
    clauses = clauses_of(text)
    assert [(c.number, c.title) for c in clauses] == [("1", "DEFINITIONS"), ("2", "SUPPLY"), ("3", "PRICE")]
    assert clauses[1].text.endswith("12 months from the start date.")


def test_extractor_without_titles_falls_back_to_numbers_then_paragraphs() -> None:
    numbered = "Terms\n\n1. The Supplier shall deliver the goods.\n2. The Customer shall pay within 30 days.\n"
    assert [(c.number, c.title) for c in clauses_of(numbered)] == [
        ("1", "The Supplier shall deliver the goods"),
        ("2", "The Customer shall pay within 30…"),
    ]
    plain = "We will deliver the goods.\n\nYou will pay within 30 days."
    assert [(c.number, c.text) for c in clauses_of(plain)] == [
        ("1", "We will deliver the goods."),
        ("2", "You will pay within 30 days."),
    ]


# --- risk_rater --------------------------------------------------------------------------------


def test_rater_on_the_sample_contract() -> None:
    ratings = risk_rater(ClauseBatch(clauses=clauses_of(sample("contract.txt")))).ratings
    assert {r.clause: (r.category, r.level) for r in ratings} == {k: v[:2] for k, v in CONTRACT_EXPECTED.items()}
    by_clause = {rating.clause: rating for rating in ratings}
    assert "180 days" in by_clause["3"].reason
    assert "only Supplier may terminate for convenience" in by_clause["11"].reason
    assert "British Virgin Islands" in by_clause["13"].reason
    assert by_clause["10"].text.startswith("10.1 Nothing in this Agreement")


@pytest.mark.parametrize(
    ("title", "text", "category", "level"),
    [
        (
            "Liability",
            "Each party's total liability shall not exceed the fees paid in the 12 months before the claim.",
            "liability",
            "none",
        ),
        ("Liability", "The Customer's liability under this Agreement shall be unlimited.", "liability", "high"),
        ("Liability", "The Supplier's liability is not subject to any limit or cap whatsoever.", "liability", "high"),
        (
            "Liability",
            "Liability shall not exceed the fees paid in the three (3) months before the claim.",
            "liability",
            "medium",
        ),
        (
            "Liability",
            "Nothing limits liability for fraud, which shall be unlimited. Otherwise liability is capped"
            " at the fees paid in the preceding twelve (12) months.",
            "liability",
            "none",
        ),
        (
            "Termination",
            "Either party may terminate this Agreement for convenience on sixty (60) days' notice.",
            "termination",
            "none",
        ),
        (
            "Termination",
            "The Provider may terminate this Agreement at any time for any reason on 7 days' notice.",
            "termination",
            "high",
        ),
        (
            "Termination",
            "The Provider may terminate for convenience on 30 days' notice and the Client may terminate"
            " for convenience on 30 days' notice.",
            "termination",
            "none",
        ),
        (
            "Termination",
            "Either party may terminate for material breach not remedied within 30 days.",
            "termination",
            "none",
        ),
        (
            "Term",
            "This agreement continues until terminated by either party on 12 months notice.",
            "termination",
            "none",
        ),
        ("Term", "The Customer may terminate this agreement on 90 days notice.", "termination", "high"),
        (
            "Data",
            "The Processor may transfer personal data outside the EEA on the basis of the Standard"
            " Contractual Clauses.",
            "data_transfer",
            "low",
        ),
        (
            "Data",
            "The Processor may transfer personal data outside the EEA to its affiliates.",
            "data_transfer",
            "high",
        ),
        ("Data", "The Processor shall not transfer personal data outside the EEA.", "data_transfer", "none"),
        (
            "Indemnity",
            "Each party shall indemnify the other against third-party claims caused by its breach.",
            "indemnity",
            "low",
        ),
        (
            "Indemnity",
            "The Client shall indemnify and hold harmless the Agency against any and all claims.",
            "indemnity",
            "high",
        ),
        (
            "Renewal",
            "This Agreement renews automatically for one-year periods unless either party gives ninety"
            " (90) days' written notice of non-renewal.",
            "auto_renewal",
            "high",
        ),
        (
            "Renewal",
            "This Agreement renews automatically for one-year periods unless either party gives thirty"
            " (30) days' written notice of non-renewal.",
            "auto_renewal",
            "low",
        ),
        ("Prices", "The Vendor may increase its prices at any time by notice to the Buyer.", "fee_change", "high"),
        ("Prices", "The Vendor may increase its prices once a year by no more than the CPI.", "fee_change", "low"),
        ("Prices", "Prices may only be changed as mutually agreed in writing.", "fee_change", "none"),
        (
            "Governing Law",
            "This Agreement is governed by the laws of the Republic of Vanuatu.",
            "governing_law",
            "high",
        ),
        ("Governing Law", "This Agreement is governed by the laws of the State of New York.", "governing_law", "none"),
        (
            "Confidentiality",
            "The recipient shall keep the Confidential Information secret in perpetuity.",
            "confidentiality",
            "medium",
        ),
        (
            "Ownership",
            "The Consultant assigns to the Client all pre-existing intellectual property in the deliverables.",
            "ip",
            "high",
        ),
        ("Payment", "Late payments bear interest at 2% per month.", "payment", "high"),
        (
            "Staff",
            "The Client shall not solicit any employee of the Agency for eighteen (18) months.",
            "non_solicitation",
            "medium",
        ),
        ("Miscellaneous", "Headings are for convenience only.", "other", "none"),
    ],
)
def test_rater_levels(title: str, text: str, category: str, level: str) -> None:
    rating = rate(text, title)
    assert (rating.category, rating.level) == (category, level), rating.reason


def test_rater_finds_a_risk_the_heading_does_not_announce() -> None:
    rating = rate("This Agreement lasts one year. The Supplier may terminate it for convenience at any time.", "Term")
    assert (rating.category, rating.level) == ("termination", "high")
    rating = rate(
        "The Client may terminate for convenience on 45 days' notice, and either party may do so. This Agreement "
        "renews automatically unless notice is given 120 days before expiry.",
        "Term",
    )
    assert (rating.category, rating.level) == ("auto_renewal", "high")


def test_basic_rater_is_keyword_only() -> None:
    clauses = [
        Clause(number="1", title="Liability", text="Liability shall not exceed the fees paid in 12 months."),
        Clause(number="2", title="Notices", text="Notices shall be in writing."),
    ]
    ratings = risk_rater_basic(ClauseBatch(clauses=clauses)).ratings
    assert [(r.clause, r.category, r.level) for r in ratings] == [("1", "liability", "medium"), ("2", "other", "none")]
    assert ratings[0].text == clauses[0].text


# --- compliance_checker ------------------------------------------------------------------------


def test_compliance_findings_on_the_sample_contract() -> None:
    ratings = risk_rater(ClauseBatch(clauses=clauses_of(sample("contract.txt")))).ratings
    findings = compliance_checker(RatingBatch(ratings=ratings)).findings
    got: dict[str, list[str]] = {}
    for finding in findings:
        got.setdefault(finding.clause, []).append(finding.rule_id)
    assert got == {clause: ids for clause, (_, _, ids) in CONTRACT_EXPECTED.items() if ids}
    liability = next(finding for finding in findings if finding.rule_id == "LIAB-001")
    assert (liability.severity, liability.category) == ("high", "liability")
    assert "shall be unlimited" in liability.reason


def test_only_clauses_rated_above_none_are_checked() -> None:
    text = "The Customer's liability shall be unlimited."
    assert check(text, level="none") == []
    assert check(text, level="low") == ["LIAB-001"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Provider may transfer personal data to a third country.", ["DATA-001"]),
        ("Provider may transfer personal data to a third country under the standard contractual clauses.", []),
        ("Provider may engage sub-processors.", ["DATA-002"]),
        ("Provider may engage sub-processors with the Customer's prior written consent.", []),
        ("This agreement is governed by the laws of Nevada.", ["LAW-001"]),
        ("This agreement is governed by the laws of the State of Delaware and the courts of London.", []),
        (
            "The Supplier's aggregate liability shall not exceed the fees paid in the six (6) months before the claim.",
            ["LIAB-002"],
        ),
        (
            "The Supplier's aggregate liability shall not exceed the fees paid in the twelve (12) months before the"
            " claim.",
            [],
        ),
        ("The Supplier excludes all liability, including for fraud or gross negligence.", ["LIAB-003"]),
        (
            "This Agreement renews automatically unless either party gives 3 months' notice of non-renewal.",
            ["REN-001", "REN-002"],
        ),
        ("This Agreement renews automatically unless either party gives 30 days' notice of non-renewal.", ["REN-001"]),
        ("The Vendor may terminate this Agreement for convenience.", ["TERM-001"]),
        ("Either party may terminate this Agreement for convenience.", []),
        ("The Client shall indemnify the Vendor against all claims.", ["IND-001"]),
        ("The Client shall indemnify the Vendor. The Vendor shall indemnify the Client.", []),
        ("The Vendor may increase its fees at any time.", ["FEE-001"]),
        ("The Vendor may increase its fees at any time, capped at the CPI.", []),
        ("The obligations of confidentiality continue in perpetuity.", ["CONF-001"]),
        ("The Supplier assigns its background IP to the Customer.", ["IP-001"]),
        ("Overdue sums bear interest at 1.5% per month.", ["PAY-001"]),
        ("Overdue sums bear interest at 8% per annum.", []),
        ("The Buyer shall buy the goods exclusively from the Seller.", ["EXCL-001"]),
        ("The Client shall not solicit employees of the Agency for 24 months.", ["NSOL-001", "NSOL-002"]),
        ("The Client shall not solicit employees of the Agency for 6 months.", ["NSOL-001"]),
    ],
)
def test_compliance_rules(text: str, expected: list[str]) -> None:
    assert check(text) == expected


def test_compliance_rules_come_from_the_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sql = tmp_path / "rules.sql"
    sql.write_text(
        SQL_PATH.read_text(encoding="utf-8").split("INSERT INTO")[0]
        + "INSERT INTO rules VALUES ('X-1', 'other', 'pineapple', NULL, 'low', 'Fruit', 'No fruit.');\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(contract_agents, "COMPLIANCE_DB", build_db(tmp_path / "rules.db", sql))
    assert check("Pineapples are delivered daily. Liability shall be unlimited.") == ["X-1"]


def test_bundled_database_matches_the_sql(tmp_path: Path) -> None:
    rebuilt = build_db(tmp_path / "compliance.db")

    def schema(path: Path) -> list[tuple[str, str]]:
        with sqlite3.connect(path) as connection:
            return connection.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()

    assert read_rows(DB_PATH) == read_rows(rebuilt)
    assert schema(DB_PATH) == schema(rebuilt)
    assert DB_PATH.stat().st_size < 100_000


def test_rules_cover_every_required_topic() -> None:
    rules = load_rules()
    assert len(rules) >= 12
    assert {rule.category for rule in rules} >= {
        "liability",
        "auto_renewal",
        "termination",
        "indemnity",
        "data_transfer",
        "fee_change",
        "governing_law",
        "confidentiality",
        "ip",
        "payment",
        "exclusivity",
        "non_solicitation",
    }
    assert {rule.severity for rule in rules} <= {"low", "medium", "high"}


@pytest.mark.parametrize("place", ALLOWED_JURISDICTIONS)
def test_allowed_jurisdictions_agree_between_rater_and_database(place: str) -> None:
    text = f"This Agreement is governed by the laws of {place}."
    assert rate(text, "Governing Law").level == "none"
    assert check(text) == []


# --- summarizer --------------------------------------------------------------------------------


def test_summary_of_the_sample_contract() -> None:
    _, findings, summary = review(sample("contract.txt"))
    assert [(flag.clause, flag.category, flag.level) for flag in summary.flags] == [
        (clause, category, level) for clause, (category, level, _) in CONTRACT_EXPECTED.items() if level != "none"
    ]
    assert summary.overall == "high" and summary.requires_legal_review is True
    assert summary.counts == {"clauses": 16, "flagged": 8, "findings": 11, "low": 0, "medium": 1, "high": 7}
    liability = next(flag for flag in summary.flags if flag.clause == "10")
    assert "uncapped liability" in liability.reason
    assert "LIAB-002: Liability cap below 12 months of fees" in liability.reason
    assert "Legal review required" in summary.summary


def test_summary_of_the_short_contract_flags_its_two_risky_clauses() -> None:
    ratings, findings, summary = review(sample("contract_short.txt"))
    assert [(f.clause, f.title, f.category, f.level) for f in summary.flags] == [
        ("5", "Non-Solicitation", "non_solicitation", "medium"),
        ("6", "Hosting of Records", "data_transfer", "high"),
    ]
    assert [finding.rule_id for finding in findings] == ["NSOL-001", "NSOL-002", "DATA-001"]
    assert {rating.clause: rating.level for rating in ratings}["3"] == "none"  # capped liability
    assert summary.requires_legal_review is True


def test_flag_level_is_the_highest_of_rating_and_findings() -> None:
    ratings = [
        Rating(clause="1", title="A", category="payment", level="low", reason="short payment term", text="x"),
        Rating(clause="2", title="B", category="other", level="none", reason="no risk indicators", text="y"),
        Rating(clause="3", title="C", category="other", level="none", reason="no risk indicators", text="z"),
    ]
    findings = [
        Finding(clause="1", rule_id="R-1", rule="Rule one", category="payment", severity="high", reason="r"),
        Finding(clause="2", rule_id="R-2", rule="Rule two", category="ip", severity="medium", reason="r"),
    ]
    summary = summarizer(SummaryInput(ratings=ratings, findings=findings))
    assert [(f.clause, f.category, f.level, f.reason) for f in summary.flags] == [
        ("1", "payment", "high", "short payment term; R-1: Rule one"),
        ("2", "ip", "medium", "R-2: Rule two"),
    ]
    assert summary.requires_legal_review is True
    harmless = summarizer(SummaryInput(ratings=ratings[1:]))
    assert harmless.flags == [] and harmless.overall == "low" and harmless.requires_legal_review is False


# --- planner and determinism -------------------------------------------------------------------


def test_planner_plans_the_review() -> None:
    plan = planner(PlanRequest(text=sample("contract.txt"), filename="contract.txt"))
    assert [(s.id, s.agent, s.depends_on) for s in plan.subtasks] == [
        ("extract", "clause_extractor", []),
        ("rate", "risk_rater", ["extract"]),
        ("check", "compliance_checker", ["rate"]),
        ("summarize", "summarizer", ["rate", "check"]),
    ]
    assert [s.input for s in plan.subtasks] == [
        {"text": "$input.text"},
        {"clauses": ["$item"]},
        {"ratings": "$results.rate.*.ratings.0"},
        {"ratings": "$results.rate.*.ratings.0", "findings": "$results.check.findings"},
    ]
    assert [s.for_each for s in plan.subtasks] == [None, "$results.extract.clauses", None, None]
    assert "contract.txt" in plan.rationale and "risk_rater_basic" not in plan.rationale


def test_replanning_after_a_failure_swaps_in_the_basic_rater() -> None:
    plan = planner(PlanRequest(text="1. Fees\nPay.", failures=["rate: risk_rater timed out"]))
    agents = [subtask.agent for subtask in plan.subtasks]
    assert agents == ["clause_extractor", "risk_rater_basic", "compliance_checker", "summarizer"]
    assert plan.subtasks[1].id == "rate" and plan.subtasks[1].for_each == "$results.extract.clauses"
    assert "risk_rater_basic" in plan.rationale and "risk_rater timed out" in plan.rationale


def test_the_review_is_deterministic() -> None:
    for name in ("contract.txt", "contract_short.txt"):
        text = sample(name)
        ratings, findings, summary = review(text)
        for _ in range(3):
            assert review(text) == (ratings, findings, summary)
        assert planner(PlanRequest(text=text)) == planner(PlanRequest(text=text))
