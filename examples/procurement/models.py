"""The data of the procurement flow: a purchase request, the five reviewers' votes and the adjudication."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Decision = Literal["approve", "reject"]


class Vendor(BaseModel):
    """The supplier a purchase request would buy from."""

    name: str
    country: str = Field(description="country name or ISO 3166 alpha-2 code")
    years_in_business: int = Field(ge=0)
    certifications: list[str] = Field(default_factory=list, description="e.g. ISO 9001, ISO 27001, ISO 14001, SOC 2")
    incidents: list[str] = Field(default_factory=list, description="known breaches, fines, recalls, lawsuits...")
    esg_score: float | None = Field(None, ge=0, le=100)
    renewable_energy_pct: float | None = Field(None, ge=0, le=100)


class PurchaseRequest(BaseModel):
    """A department's request to buy something from a vendor."""

    id: str
    item: str
    category: str
    quantity: int = Field(ge=1)
    unit_price: float = Field(ge=0)
    currency: str = "USD"
    department: str
    budget_remaining: float = Field(description="the department's remaining budget, in the same currency")
    justification: str
    vendor: Vendor
    requirements: list[str] = Field(default_factory=list, description="what the item must do, e.g. 'battery 8 hours'")
    offered: list[str] = Field(default_factory=list, description="the vendor's specifications, e.g. 'battery 10 hours'")
    delivery_days: int | None = Field(None, ge=0)
    contract_terms: list[str] = Field(default_factory=list)

    @property
    def total(self) -> float:
        return round(self.quantity * self.unit_price, 2)


class Vote(BaseModel):
    """One reviewer's verdict on a purchase request."""

    vote: Decision
    confidence: float = Field(ge=0, le=1)
    reason: str


class BallotView(BaseModel):
    """A vote as the adjudicator sees it: who cast it, and how much it counts."""

    agent: str
    vote: str
    confidence: float = Field(ge=0, le=1)
    reason: str
    weight: float = Field(1.0, ge=0)


class Adjudication(BaseModel):
    request: PurchaseRequest
    votes: list[BallotView]


class Closing(BaseModel):
    """What the final decision is made from: the agents' (or adjudicator's) decision and, for a
    split vote, the purchasing committee's gate record."""

    request: str
    decision: Decision
    reason: str
    committee: dict[str, Any] | None = None


class FinalDecision(BaseModel):
    decision: Decision
    reason: str
    decided_by: str
