"""The data of the customer_enrichment flow: a customer record, each enricher's partial record, and conflicts.

Every enricher returns only the fields it knows about; all of them are optional, so the partial
records can be merged into one profile. When two enrichers set the same field to different
values, the data_steward gets a ConflictCase and returns a Resolution.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Segment = Literal["smb", "mid_market", "enterprise"]
Tier = Literal["bronze", "silver", "gold"]


class Customer(BaseModel):
    """A customer record as it arrives from the CRM."""

    id: str
    name: str
    email: str
    phone: str | None = None
    company: str | None = None
    country: str | None = Field(None, description="country name or ISO 3166 alpha-2 code, as entered")
    website: str | None = None
    notes: str = ""


class ContactInfo(BaseModel):
    """contact_validator's part: is the e-mail usable, and the phone number in E.164 form."""

    email_valid: bool | None = None
    email_domain: str | None = None
    phone_e164: str | None = Field(None, description="+<country code><number>, e.g. +48225550147")
    country: str | None = Field(None, description="the country of the phone number's calling code")


class Firmographics(BaseModel):
    """firmographics' part: company facts from the bundled company-data lookup."""

    industry: str | None = None
    employees: int | None = None
    annual_revenue_usd: float | None = None
    company_domain: str | None = None


class WebProfile(BaseModel):
    """web_profile's part: what the notes, company name and website say about the business."""

    industry: str | None = None
    linkedin_url: str | None = None
    description: str | None = None


class SegmentInfo(BaseModel):
    """segmenter's part: the sales segment and service tier inferred from the record alone."""

    segment: Segment | None = None
    tier: Tier | None = None


class Candidate(BaseModel):
    """One value proposed for a field, by the agent of one branch."""

    branch: str
    agent: str
    value: Any = None


class ConflictCase(BaseModel):
    key: str = Field(description="the field the candidates disagree on, e.g. industry")
    candidates: list[Candidate]


class Resolution(BaseModel):
    value: Any = None
    chosen: str = Field(description="the agent whose value was kept")
    reason: str
