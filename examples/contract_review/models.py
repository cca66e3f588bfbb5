"""The data the contract_review agents take and return.

planner -> clause_extractor -> risk_rater (or risk_rater_basic) -> compliance_checker -> summarizer.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Level = Literal["none", "low", "medium", "high"]
Severity = Literal["low", "medium", "high"]
LEVELS: tuple[Level, ...] = ("none", "low", "medium", "high")
CATEGORIES: tuple[str, ...] = (
    "liability",
    "auto_renewal",
    "termination",
    "indemnity",
    "data_transfer",
    "fee_change",
    "governing_law",
    "confidentiality",
    "payment",
    "ip",
    "exclusivity",
    "non_solicitation",
    "other",
)


# --- planning ----------------------------------------------------------------------------------


class PlanRequest(BaseModel):
    """A contract to review, and the failures of earlier attempts when re-planning."""

    text: str = Field(min_length=1, description="the contract as plain text")
    filename: str | None = Field(None, description="where the text came from, informational only")
    failures: list[str] = Field(default_factory=list, description="errors of a previous plan, if re-planning")
    notes: str | None = Field(None, description="a reviewer's requested changes, when the review is sent back")


class Subtask(BaseModel):
    """One step of a plan: an agent, its input (may hold `$input...`/`$results...` templates) and its prerequisites."""

    id: str
    agent: str
    input: dict[str, Any]
    depends_on: list[str] = Field(default_factory=list)
    for_each: str | None = None  # run the agent once per item of this list, the item being `$item`


class Plan(BaseModel):
    subtasks: list[Subtask]
    rationale: str


# --- clauses -----------------------------------------------------------------------------------


class ContractText(BaseModel):
    text: str = Field(min_length=1, description="the contract as plain text")


class Clause(BaseModel):
    """A numbered clause: its number as written ("4", "4.2", "IV"), its heading and its body."""

    number: str
    title: str
    text: str


class Clauses(BaseModel):
    clauses: list[Clause]


class ClauseBatch(BaseModel):
    clauses: list[Clause]


# --- ratings and findings ----------------------------------------------------------------------


class Rating(BaseModel):
    """The risk of one clause: its main topic, a level and why."""

    clause: str = Field(description="the clause number")
    title: str
    category: str
    level: Level
    reason: str
    text: str = Field(description="the clause body, for the compliance check")


class Ratings(BaseModel):
    ratings: list[Rating]


class RatingBatch(BaseModel):
    ratings: list[Rating]


class Finding(BaseModel):
    """A compliance rule from the rules database that a risky clause breaks."""

    clause: str
    rule_id: str
    rule: str = Field(description="the rule's description")
    category: str
    severity: Severity
    reason: str = Field(description="the rule's guidance and the sentence that triggered it")


class Findings(BaseModel):
    findings: list[Finding]


# --- summary -----------------------------------------------------------------------------------


class SummaryInput(BaseModel):
    ratings: list[Rating]
    findings: list[Finding] = Field(default_factory=list)
    notes: str | None = Field(None, description="a reviewer's requested changes to address")


class Flag(BaseModel):
    """One risky clause: the higher of its rating and its findings' severities, and why."""

    clause: str
    title: str
    category: str
    level: Severity
    reason: str


class ContractSummary(BaseModel):
    flags: list[Flag]
    overall: Severity
    counts: dict[str, int]
    summary: str
    requires_legal_review: bool
