"""The agents of the customer_enrichment flow: four enrichers run concurrently, a data steward settles conflicts.

contact_validator, firmographics, web_profile and segmenter each read the same Customer and
return a partial record (only the fields they know). firmographics and web_profile can disagree
on `industry`; data_steward then keeps the more reliable source. All offline and deterministic:
rules and the bundled tables in data.py, no network, randomness or clock.
"""

from __future__ import annotations

import re

from ensemble.authoring.agents import agent
from ensemble.examples.customer_enrichment.data import (
    CALLING_CODES,
    CANADIAN_AREA_CODES,
    COMPANIES,
    COUNTRIES,
    COUNTRY_ALIASES,
    FREE_MAIL_DOMAINS,
    INDUSTRY_KEYWORDS,
    TRUNK_PREFIX_KEPT,
    Company,
)
from ensemble.examples.customer_enrichment.models import (
    Candidate,
    ConflictCase,
    ContactInfo,
    Customer,
    Firmographics,
    Resolution,
    Segment,
    SegmentInfo,
    Tier,
    WebProfile,
)

# Higher wins: a licensed company registry beats keywords, which beat inference from the record.
RELIABILITY: dict[str, int] = {"firmographics": 4, "web_profile": 3, "segmenter": 2, "contact_validator": 1}
SOURCES: dict[str, str] = {
    "firmographics": "company-data lookup by corporate domain",
    "web_profile": "keywords in the notes, company name and website",
    "segmenter": "inference from the record alone",
    "contact_validator": "phone and e-mail syntax",
}

_EMAIL = re.compile(
    r"^(?!\.)(?!.*\.\.)[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+(?<!\.)@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,63}$"
)
_EXTENSION = re.compile(r"\s*(?:ext\.?|x|#)\s*\d{1,6}\s*$", re.I)
_NON_DIGIT = re.compile(r"\D")
_HOST = re.compile(r"^(?:[a-z][a-z0-9+.-]*://)?(?:www\d?\.)?([^/:?#\s]+)", re.I)
_LINKEDIN = re.compile(r"(?:https?://)?(?:[a-z]{2,3}\.)?linkedin\.com/(company|in)/([\w%-]+)", re.I)
_NAME_TOKEN = re.compile(r"[a-z0-9&]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_BUSINESS_CLAUSE = re.compile(
    r"\b(?:runs|run|owns|own|operates|operate|manages|manage|founded|is|are|works\s+(?:at|for|in)|sells|sell|makes"
    r"|make|produces|produce|builds|build|develops|develop)\b(?P<what>[^.;,]*?)(?=\band\b|\bbut\b|[.;,]|$)",
    re.I,
)
_KEYWORDS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (industry, re.compile(r"(?<![\w-])(?:" + "|".join(re.escape(word) for word in words) + r")(?![\w-])", re.I))
    for industry, words in INDUSTRY_KEYWORDS.items()
)
_ENTERPRISE_WORDS = frozenset(
    "group holding holdings international global plc ag se corporation corp worldwide".split()
)
_MID_WORDS = frozenset("inc systems technologies industries solutions logistics labs".split())
_SMALL_WORDS = frozenset("studio bakery cafe café shop salon consulting freelance family sons boutique".split())
_TIERS: dict[Segment | None, Tier] = {"enterprise": "gold", "mid_market": "silver", "smb": "bronze", None: "bronze"}


def canonical_country(value: str | None) -> str | None:
    """ "PL", "poland" and "Poland" -> "Poland"; unknown names come back trimmed."""
    if not value or not value.strip():
        return None
    key = " ".join(value.lower().replace(".", "").split())
    if key in COUNTRY_ALIASES:
        return COUNTRY_ALIASES[key]
    return next((name for name in COUNTRIES if name.lower() == key), value.strip())


def _email_domain(email: str) -> str | None:
    _, at, domain = email.strip().rpartition("@")
    return domain.lower().strip(".") or None if at else None


def _valid_domain(email: str) -> str | None:
    """The domain of a syntactically valid address only: a broken address says nothing about an employer."""
    return _email_domain(email) if _EMAIL.match(email.strip()) else None


def _website_host(website: str | None) -> str | None:
    match = _HOST.match(website.strip()) if website else None
    return match[1].lower().strip(".") if match else None


def _phone(phone: str | None, country: str | None) -> tuple[str | None, str | None]:
    """(E.164 number, country of its calling code), or (None, None) when it cannot be read."""
    if not phone or not phone.strip():
        return None, None
    raw = _EXTENSION.sub("", phone.strip()).replace("(0)", "")
    digits = _NON_DIGIT.sub("", raw)
    home = {name: code for code, name in CALLING_CODES.items()} | {"Canada": "1"}
    if raw.startswith("+"):
        number = digits
    elif digits.startswith("00"):
        number = digits[2:]
    elif country in home:
        home_code = home[country]
        national = digits[1:] if digits.startswith("0") and home_code not in TRUNK_PREFIX_KEPT else digits
        number = (
            national if home_code == "1" and len(national) == 11 and national.startswith("1") else home_code + national
        )
    else:
        return None, None
    code = next((number[:size] for size in (3, 2, 1) if number[:size] in CALLING_CODES), None)
    if code is None or not 8 <= len(number) <= 15:
        return None, None
    where = "Canada" if code == "1" and number[1:4] in CANADIAN_AREA_CODES else CALLING_CODES[code]
    return f"+{number}", where


@agent(
    name="contact_validator",
    description="Checks the e-mail address and puts the phone number in E.164 form, with the country of its code.",
    timeout_s=30,
)
def contact_validator(data: Customer) -> ContactInfo:
    """Checks the e-mail address and puts the phone number in E.164 form, with the country of its code.

    `email_valid` is a syntax check (local part, dotted domain, 2+ letter TLD, no double dots);
    `email_domain` is what follows the last "@". A phone number with "+" or "00" is read as
    international; a national number uses the record's country for its calling code and drops
    the trunk 0 (kept for Italy). `country` comes from the calling code (+1 is Canada for
    Canadian area codes, else United States); numbers that cannot be read give None.
    """
    phone_e164, phone_country = _phone(data.phone, canonical_country(data.country))
    return ContactInfo(
        email_valid=bool(_EMAIL.match(data.email.strip())),
        email_domain=_email_domain(data.email),
        phone_e164=phone_e164,
        country=phone_country,
    )


def _corporate_domains(data: Customer) -> list[str]:
    domains = [_valid_domain(data.email), _website_host(data.website)]
    return list(dict.fromkeys(d for d in domains if d and d not in FREE_MAIL_DOMAINS))


def _lookup(domain: str) -> Company | None:
    labels = domain.split(".")
    for start in range(len(labels) - 1):  # mail.goldencrust.example -> goldencrust.example
        company = COMPANIES.get(".".join(labels[start:]))
        if company:
            return company
    return None


def _name_key(name: str) -> str:
    return " ".join(_NAME_TOKEN.findall(name.lower()))


@agent(
    name="firmographics",
    description="Looks the customer's company up by corporate e-mail domain or website: industry, size, revenue.",
    timeout_s=30,
)
def firmographics(data: Customer) -> Firmographics:
    """Looks the customer's company up by corporate e-mail domain or website: industry, size, revenue.

    The domain of a valid e-mail address (unless a free-mail provider) and the website host
    are tried in that order, each with its parent domains, against the bundled company table;
    failing that, the company name is matched exactly (case and punctuation aside).
    `company_domain` is the matched domain, else the first corporate domain seen. Unknown
    companies give no facts.
    """
    domains = _corporate_domains(data)
    for domain in domains:
        company = _lookup(domain)
        if company:
            matched = next(key for key, value in COMPANIES.items() if value is company)
            return Firmographics(
                industry=company.industry,
                employees=company.employees,
                annual_revenue_usd=company.annual_revenue_usd,
                company_domain=matched,
            )
    if data.company:
        key = _name_key(data.company)
        for domain, company in COMPANIES.items():
            if _name_key(company.name) == key:
                return Firmographics(
                    industry=company.industry,
                    employees=company.employees,
                    annual_revenue_usd=company.annual_revenue_usd,
                    company_domain=domain,
                )
    return Firmographics(company_domain=domains[0] if domains else None)


def _industry_scores(data: Customer) -> dict[str, int]:
    scores: dict[str, int] = {}

    def add(text: str, weight: int) -> None:
        for industry, pattern in _KEYWORDS:
            hits = len(pattern.findall(text))
            if hits:
                scores[industry] = scores.get(industry, 0) + weight * hits

    add(data.notes, 1)
    for clause in _BUSINESS_CLAUSE.finditer(data.notes):
        add(clause["what"], 2)  # "runs a chain of bakeries": 3 in all
    host = _website_host(data.website) or ""
    add(" ".join(part for part in (data.company or "", host.replace("-", " ").replace(".", " "))), 2)
    return scores


@agent(
    name="web_profile",
    description=(
        "Reads the notes, company name and website for the customer's industry, LinkedIn page and a description."
    ),
    timeout_s=30,
)
def web_profile(data: Customer) -> WebProfile:
    """Reads the notes, company name and website for the customer's industry, LinkedIn page and a description.

    Industry keywords (data.INDUSTRY_KEYWORDS) score 1 each in the notes, 3 when they say what
    the customer does ("runs a chain of bakeries", "is a dentist"), and 2 in the company name
    or website host. The best score wins (ties: the first industry in the table); no keyword
    gives None. `linkedin_url` is a LinkedIn link found in the notes or website, normalised;
    `description` is the first sentence of the notes that says what the customer does.
    """
    scores = _industry_scores(data)
    order = list(INDUSTRY_KEYWORDS)
    industry = max(scores, key=lambda name: (scores[name], -order.index(name))) if scores else None
    linkedin = _LINKEDIN.search(f"{data.notes} {data.website or ''}")
    linkedin_url = f"https://www.linkedin.com/{linkedin[1].lower()}/{linkedin[2].lower()}" if linkedin else None
    description = next(
        (sentence.strip() for sentence in _SENTENCE.split(data.notes) if _BUSINESS_CLAUSE.search(sentence)), None
    )
    if description and len(description) > 200:
        description = description[:199].rstrip() + "…"
    return WebProfile(industry=industry, linkedin_url=linkedin_url, description=description)


@agent(
    name="segmenter",
    description=(
        "Infers the sales segment and service tier from the record alone: e-mail domain, company name, country."
    ),
    timeout_s=30,
)
def segmenter(data: Customer) -> SegmentInfo:
    """Infers the sales segment and service tier from the record alone: e-mail domain, company name, country.

    Points: +3 for a big-company word in the name (Group, Holdings, International, plc, AG...),
    +1 for a mid-size word (Inc, Systems, Technologies...), -1 for a small-business word
    (Studio, Bakery, Consulting, Freelance...), +1 for a corporate e-mail domain and -1 for a
    free-mail or invalid one. 3+ is enterprise, 1-2 mid_market, less smb; no company name and
    no corporate domain gives no segment. Tier follows the segment (gold, silver, bronze;
    bronze without one) and drops a step for a high-risk country.
    """
    domain = _valid_domain(data.email)
    corporate = domain is not None and domain not in FREE_MAIL_DOMAINS
    segment: Segment | None = None
    if data.company or corporate:
        words = set(_NAME_TOKEN.findall((data.company or "").lower()))
        points = (1 if corporate else -1) + (3 if words & _ENTERPRISE_WORDS else 0)
        points += (1 if words & _MID_WORDS else 0) - (1 if words & _SMALL_WORDS else 0)
        segment = "enterprise" if points >= 3 else "mid_market" if points >= 1 else "smb"
    tier = _TIERS[segment]
    country = canonical_country(data.country)
    if country in COUNTRIES and COUNTRIES[country][1] == "high":
        tier = {"gold": "silver", "silver": "bronze", "bronze": "bronze"}[tier]  # type: ignore[assignment]
    return SegmentInfo(segment=segment, tier=tier)


def _base_agent(name: str) -> str:
    return re.split(r"[.:/]", name)[-1]


def _describe(candidate: Candidate) -> str:
    agent_name = _base_agent(candidate.agent)
    return f"{candidate.agent} {candidate.value!r} (reliability {RELIABILITY.get(agent_name, 0)})"


@agent(
    name="data_steward",
    description="Settles a field two enrichers disagree on: the value of the more reliable source wins.",
    timeout_s=30,
)
def data_steward(data: ConflictCase) -> Resolution:
    """Settles a field two enrichers disagree on: the value of the more reliable source wins.

    Reliability: firmographics (company-data lookup) 4 > web_profile (keywords) 3 > segmenter
    (inference) 2 > contact_validator (syntax) 1; unknown agents 0. Empty values are not
    claims. Ties go to the first branch name in sort order, so the candidates' order does not
    matter. The reason names the winner, its source and the values it beat.
    """
    ranked = sorted(
        data.candidates,
        key=lambda c: (c.value is None, -RELIABILITY.get(_base_agent(c.agent), 0), c.branch, c.agent, repr(c.value)),
    )
    if not ranked:
        return Resolution(value=None, chosen="", reason=f"{data.key}: no candidates to choose from")
    winner = ranked[0]
    name = _base_agent(winner.agent)
    source = SOURCES.get(name, "an unranked source")
    others = [candidate for candidate in ranked[1:] if candidate.value is not None]
    if all(candidate.value == winner.value for candidate in others):
        reason = f"{data.key}: all sources agree on {winner.value!r}; kept {winner.agent} ({source})"
    else:
        beaten = ", ".join(_describe(candidate) for candidate in others if candidate.value != winner.value)
        reason = (
            f"{data.key}: chose {winner.value!r} from {winner.agent} (reliability {RELIABILITY.get(name, 0)}:"
            f" {source}) over {beaten}"
        )
    return Resolution(value=winner.value, chosen=winner.agent, reason=reason)
