"""The customer_enrichment agents, called directly: the bundled customer and records they have never seen."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest

from ensemble.authoring.agents import get_agent
from ensemble.examples.customer_enrichment import agents as enrichment_agents
from ensemble.examples.customer_enrichment.agents import (
    RELIABILITY,
    canonical_country,
    contact_validator,
    data_steward,
    firmographics,
    segmenter,
    web_profile,
)
from ensemble.examples.customer_enrichment.data import COMPANIES, COUNTRIES, COUNTRY_ALIASES
from ensemble.examples.customer_enrichment.models import (
    Candidate,
    ConflictCase,
    ContactInfo,
    Customer,
    Firmographics,
    Resolution,
    SegmentInfo,
    WebProfile,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "customer_enrichment"
ENRICHERS = {
    "contact_validator": contact_validator,
    "firmographics": firmographics,
    "web_profile": web_profile,
    "segmenter": segmenter,
}


def customer() -> Customer:
    return Customer.model_validate(json.loads((EXAMPLE / "customer.json").read_text(encoding="utf-8")))


def enrich(record: Customer) -> dict[str, dict[str, Any]]:
    return {name: enricher(record).model_dump() for name, enricher in ENRICHERS.items()}


# Two records the agents have never seen.
FREELANCER = Customer(
    id="C-1",
    name="Tom Becker",
    email="tom.becker@gmail.com",
    phone="0171 5550123",
    country="Germany",
    notes="Freelance photographer. Asked about pricing for photo books.",
)
CANADIAN = Customer(
    id="C-2",
    name="Priya Shah",
    email="Priya.Shah@Northwind-Logistics.example",
    phone="(416) 555-0199",
    company="Northwind Logistics, Inc.",
    country="CA",
    notes="Operations director; she manages freight planning for the Toronto warehouse.",
)


def test_agents_are_registered_with_their_docstring_descriptions() -> None:
    for name in [*ENRICHERS, "data_steward"]:
        spec = get_agent(name)
        assert spec is not None and spec.handler == f"ensemble.examples.customer_enrichment.agents:{name}"
        assert spec.description == inspect.getdoc(getattr(enrichment_agents, name)).split("\n\n")[0]


def test_lookup_tables_are_consistent() -> None:
    assert len(COMPANIES) >= 15
    assert all(domain.endswith(".example") for domain in COMPANIES)  # fictitious companies only
    assert set(COUNTRY_ALIASES.values()) <= set(COUNTRIES)
    assert {risk for _, risk in COUNTRIES.values()} == {"low", "medium", "high"}


# --- the bundled customer ----------------------------------------------------------------------


def test_enrichment_of_the_bundled_customer() -> None:
    assert enrich(customer()) == {
        "contact_validator": {
            "email_valid": True,
            "email_domain": "goldencrust.example",
            "phone_e164": "+48225550147",
            "country": "Poland",
        },
        "firmographics": {
            "industry": "retail",
            "employees": 420,
            "annual_revenue_usd": 31_000_000.0,
            "company_domain": "goldencrust.example",
        },
        "web_profile": {
            "industry": "food & beverage",
            "linkedin_url": "https://www.linkedin.com/company/golden-crust-bakeries",
            "description": "Marta runs a chain of bakeries (38 shops) and wants loyalty-card analytics for her stores.",
        },
        "segmenter": {"segment": "mid_market", "tier": "silver"},
    }


def test_the_bundled_customer_has_a_real_industry_conflict() -> None:
    outputs = enrich(customer())
    claims = {name: output["industry"] for name, output in outputs.items() if output.get("industry") is not None}
    assert claims == {"firmographics": "retail", "web_profile": "food & beverage"}
    # every other field is set by at most one agent
    keys = [key for output in outputs.values() for key, value in output.items() if value is not None]
    assert [key for key in set(keys) if keys.count(key) > 1] == ["industry"]


def test_data_steward_keeps_the_firmographics_industry() -> None:
    outputs = enrich(customer())
    case = ConflictCase(
        key="industry",
        candidates=[
            Candidate(branch="web", agent="web_profile", value=outputs["web_profile"]["industry"]),
            Candidate(branch="firmo", agent="firmographics", value=outputs["firmographics"]["industry"]),
        ],
    )
    resolution = data_steward(case)
    assert (resolution.value, resolution.chosen) == ("retail", "firmographics")
    assert resolution.reason == (
        "industry: chose 'retail' from firmographics (reliability 4: company-data lookup by corporate domain)"
        " over web_profile 'food & beverage' (reliability 3)"
    )
    reversed_case = case.model_copy(update={"candidates": case.candidates[::-1]})
    assert data_steward(reversed_case) == resolution


# --- records the agents have never seen --------------------------------------------------------


def test_enrichment_of_a_freelancer_with_a_free_mail_address() -> None:
    assert enrich(FREELANCER) == {
        "contact_validator": {
            "email_valid": True,
            "email_domain": "gmail.com",
            "phone_e164": "+491715550123",
            "country": "Germany",
        },
        "firmographics": {"industry": None, "employees": None, "annual_revenue_usd": None, "company_domain": None},
        "web_profile": {"industry": "media", "linkedin_url": None, "description": None},
        "segmenter": {"segment": None, "tier": "bronze"},
    }


def test_enrichment_of_a_known_company_in_canada() -> None:
    assert enrich(CANADIAN) == {
        "contact_validator": {
            "email_valid": True,
            "email_domain": "northwind-logistics.example",
            "phone_e164": "+14165550199",
            "country": "Canada",
        },
        "firmographics": {
            "industry": "logistics",
            "employees": 2300,
            "annual_revenue_usd": 410_000_000.0,
            "company_domain": "northwind-logistics.example",
        },
        "web_profile": {
            "industry": "logistics",
            "linkedin_url": None,
            "description": "Operations director; she manages freight planning for the Toronto warehouse.",
        },
        "segmenter": {"segment": "mid_market", "tier": "silver"},
    }


@pytest.mark.parametrize(
    ("phone", "country", "e164", "phone_country"),
    [
        ("+44 (0)20 7946 0321", None, "+442079460321", "United Kingdom"),
        ("0044 20 7946 0321", None, "+442079460321", "United Kingdom"),
        ("+1 (206) 555-0147", None, "+12065550147", "United States"),
        ("1-206-555-0147", "US", "+12065550147", "United States"),
        ("06 5550 1234", "Italy", "+390655501234", "Italy"),  # the Italian trunk 0 is kept
        ("+49 30 5550 1234 ext. 12", None, "+493055501234", "Germany"),
        ("555 0147", None, None, None),  # national number, no country to place it
        ("+999 123", None, None, None),
    ],
)
def test_phone_numbers(phone: str, country: str | None, e164: str | None, phone_country: str | None) -> None:
    record = Customer(id="C", name="N", email="n@example.org", phone=phone, country=country)
    result = contact_validator(record)
    assert (result.phone_e164, result.country) == (e164, phone_country)


@pytest.mark.parametrize(
    ("email", "valid", "domain"),
    [
        ("a.b+tag@sub.example.co.uk", True, "sub.example.co.uk"),
        ("bob@@example", False, "example"),
        ("no-at-sign.example.com", False, None),
        ("double..dot@example.com", False, "example.com"),
        ("trailing@example.c", False, "example.c"),
    ],
)
def test_email_validation(email: str, valid: bool, domain: str | None) -> None:
    result = contact_validator(Customer(id="C", name="N", email=email))
    assert (result.email_valid, result.email_domain) == (valid, domain)


def test_firmographics_by_website_subdomain_and_company_name() -> None:
    site = "https://shop.orbis-software.example/x"
    by_site = firmographics(Customer(id="C", name="N", email="l@web.de", website=site))
    assert (by_site.industry, by_site.company_domain) == ("software", "orbis-software.example")
    by_name = firmographics(Customer(id="C", name="N", email="k@gmail.com", company="KESTREL ENERGY PLC"))
    assert (by_name.industry, by_name.employees) == ("energy", 21_000)
    unknown = firmographics(Customer(id="C", name="N", email="x@unknown-co.example"))
    assert unknown == Firmographics(company_domain="unknown-co.example")
    assert firmographics(Customer(id="C", name="N", email="x@@unknown-co.example")) == Firmographics()


def test_web_profile_prefers_what_the_customer_does() -> None:
    record = Customer(
        id="C",
        name="N",
        email="n@gmail.com",
        notes="Found us through a retail newsletter. She owns a dental clinic in Leeds and needs software for"
        " bookings.",
    )
    profile = web_profile(record)
    assert profile.industry == "healthcare"
    assert profile.description == "She owns a dental clinic in Leeds and needs software for bookings."
    assert web_profile(Customer(id="C", name="N", email="n@gmail.com")) == WebProfile()


@pytest.mark.parametrize(
    ("changes", "segment", "tier"),
    [
        ({"company": "Bluepeak Hotels Group", "email": "a@bluepeak-hotels.example"}, "enterprise", "gold"),
        (
            {"company": "Bluepeak Hotels Group", "email": "a@bluepeak-hotels.example", "country": "VE"},
            "enterprise",
            "silver",
        ),
        ({"company": "Rossi Photo Studio", "email": "rossi@gmail.com"}, "smb", "bronze"),
        ({"company": "Quantum Systems Inc", "email": "q@quantum.example"}, "mid_market", "silver"),
        ({"email": "someone@hotmail.com"}, None, "bronze"),
    ],
)
def test_segmenter(changes: dict[str, Any], segment: str | None, tier: str) -> None:
    record = Customer.model_validate({"id": "C", "name": "N", "email": "n@x.example", **changes})
    assert segmenter(record) == SegmentInfo(segment=segment, tier=tier)


def test_canonical_country() -> None:
    assert [canonical_country(value) for value in ("PL", " poland ", "U.S.", "Atlantis", "", None)] == [
        "Poland",
        "Poland",
        "United States",
        "Atlantis",
        None,
        None,
    ]


def test_data_steward_ranks_every_source() -> None:
    assert sorted(RELIABILITY, key=RELIABILITY.__getitem__, reverse=True) == [
        "firmographics",
        "web_profile",
        "segmenter",
        "contact_validator",
    ]
    case = ConflictCase(
        key="country",
        candidates=[
            Candidate(branch="a", agent="contact_validator", value="Canada"),
            Candidate(branch="b", agent="enrich.segmenter", value="United States"),
            Candidate(branch="c", agent="firmographics", value=None),  # no claim
        ],
    )
    resolution = data_steward(case)
    assert (resolution.value, resolution.chosen) == ("United States", "enrich.segmenter")
    assert "over contact_validator 'Canada' (reliability 1)" in resolution.reason
    agree = ConflictCase(
        key="industry",
        candidates=[
            Candidate(branch="x", agent="web_profile", value="retail"),
            Candidate(branch="y", agent="firmographics", value="retail"),
        ],
    )
    assert data_steward(agree) == Resolution(
        value="retail",
        chosen="firmographics",
        reason="industry: all sources agree on 'retail'; kept firmographics (company-data lookup by corporate domain)",
    )
    assert data_steward(ConflictCase(key="k", candidates=[])).chosen == ""


def test_outputs_are_partial_records_and_deterministic() -> None:
    for model in (ContactInfo, Firmographics, WebProfile, SegmentInfo):
        assert all(not field.is_required() for field in model.model_fields.values())
    for record in (customer(), FREELANCER, CANADIAN):
        assert enrich(record) == enrich(record.model_copy(deep=True))
