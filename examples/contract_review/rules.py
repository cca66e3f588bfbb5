"""The heuristics behind risk_rater and risk_rater_basic: what makes a clause risky, and how much.

Every assessor reads one clause (whitespace-normalised, split into sentences) and returns a level
and a reason, or None when the clause says nothing about its topic. Pure functions of the text:
no I/O, clock or randomness.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ensemble.examples.contract_review.clauses import (
    actors,
    actors_pattern,
    notice_days,
    passive_pattern,
    period,
    quantities_in_days,
    quote,
)
from ensemble.examples.contract_review.models import Level

Assessment = tuple[Level, str]
LEVEL_RANK: dict[str, int] = {"none": 0, "low": 1, "medium": 2, "high": 3}

# Governing-law / venue places that need no escalation (the SQL rule LAW-001 uses the same list).
ALLOWED_JURISDICTIONS: tuple[str, ...] = (
    "England",
    "Wales",
    "Scotland",
    "Northern Ireland",
    "Ireland",
    "United Kingdom",
    "Germany",
    "France",
    "Netherlands",
    "Belgium",
    "Luxembourg",
    "Austria",
    "Switzerland",
    "Sweden",
    "Denmark",
    "Finland",
    "Norway",
    "Spain",
    "Italy",
    "Portugal",
    "Poland",
    "New York",
    "Delaware",
    "California",
    "Texas",
    "Illinois",
    "Massachusetts",
    "Washington",
    "Ontario",
    "Singapore",
    "New South Wales",
    "London",
    "Dublin",
    "Paris",
    "Amsterdam",
    "Stockholm",
    "Zurich",
    "Geneva",
    "Munich",
    "Frankfurt",
    "Berlin",
    "Toronto",
)

# --- the assessors -----------------------------------------------------------------------------

_UNLIMITED = re.compile(
    r"\bunlimited\b|\buncapped\b|\b(?:shall|will|is)\s+not\s+be\s+(?:limited|capped)\b"
    r"|\bwithout\s+(?:any\s+)?(?:limit|cap|ceiling)(?!ation)\b|\bno\s+(?:limit|cap|ceiling)\s+(?:on|to)\b"
    r"|\bnot\s+subject\s+to\s+any\s+(?:limit|cap)",
    re.I,
)
_LIABILITY_CONTEXT = re.compile(r"\bliab|\bindemn|\blosses\b|\bdamages\b", re.I)
_CARVE_OUT = re.compile(r"\bdeath\b|personal\s+injury|\bfraud|\bwil(?:l)?ful|gross\s+negligence", re.I)
_CAP = re.compile(
    r"\bshall\s+not\s+exceed|\bwill\s+not\s+exceed|\b(?:limited|capped)\s+(?:to|at)\b|\bin\s+excess\s+of\b"
    r"|\bmaximum\s+(?:aggregate\s+)?liability|\bliability\s+cap\b",
    re.I,
)


def assess_liability(text: str, parts: list[str], titled: bool) -> Assessment | None:
    for sentence in parts:
        if _UNLIMITED.search(sentence) and _LIABILITY_CONTEXT.search(sentence) and not _CARVE_OUT.search(sentence):
            return "high", f"uncapped liability: “{quote(sentence)}”"
    capped = [sentence for sentence in parts if _CAP.search(sentence) and _LIABILITY_CONTEXT.search(sentence)]
    if capped:
        months = [days // 30 for sentence in capped for days in quantities_in_days(sentence)]
        if months and min(months) < 12:
            return "medium", f"liability is capped at only {min(months)} months of fees"
        return "none", "liability is capped"
    if titled:
        return "medium", "no overall cap on liability"
    return None


_AUTO_RENEW = re.compile(
    r"\bautomatic(?:ally)?\s+(?:be\s+)?(?:renew|extend)|\brenew\w*\s+(?:\w+\s+)?automatically|\bauto-?renew"
    r"|\bextend\w*\s+automatically|\btacit(?:ly)?\s+renew|\bevergreen\b",
    re.I,
)
_RENEW_WORD = re.compile(r"\brenew", re.I)
_NO_RENEW = re.compile(r"\bnot\s+(?:be\s+)?(?:automatically\s+)?renew|\bno\s+automatic\s+renewal", re.I)
_RENEWAL_CONTEXT = re.compile(r"\brenew|\bextend|\bend\s+of\s+the\s+(?:initial|then[- ]current|renewal)|\bexpiry", re.I)


def assess_auto_renewal(text: str, parts: list[str], titled: bool) -> Assessment | None:
    renewing = [sentence for sentence in parts if _AUTO_RENEW.search(sentence) and not _NO_RENEW.search(sentence)]
    if not renewing:
        return ("none", "no automatic renewal") if titled and _RENEW_WORD.search(text) else None
    notices = [days for sentence in parts if _RENEWAL_CONTEXT.search(sentence) for days in notice_days(sentence)]
    if not notices:
        return "medium", "renews automatically; no notice period to stop it is stated"
    days = max(notices)
    reason = f"renews automatically unless cancelled {period(days)} before the end of the term"
    if days >= 90:
        return "high", reason
    return ("medium", reason) if days >= 60 else ("low", reason)


_TERMINATE_BY = actors_pattern(r"terminat\w*|cancel\w*")
_TERMINATED_BY = passive_pattern(r"terminated|cancell?ed")
_CONVENIENCE = re.compile(
    r"\bfor\s+(?:its\s+)?convenience|\bfor\s+any\s+(?:or\s+no\s+)?reason|\bwithout\s+(?:cause|reason)"
    r"|\bwithout\s+giving\s+(?:any\s+)?reasons?|\bat\s+(?:its|their)\s+(?:sole\s+|absolute\s+)?discretion"
    r"|\bat\s+will\b",
    re.I,
)
_TERMINATE = re.compile(r"\bterminat|\bcancel", re.I)
_CAUSE = re.compile(
    r"\bbreach|\binsolven|\bbankrupt|\bdefault|\bfail|\bmaterial\b|\bwinding[- ]up|\badministrat"
    r"|\bchange\s+of\s+control|\bforce\s+majeure|\bremed",
    re.I,
)


def assess_termination(text: str, parts: list[str], titled: bool) -> Assessment | None:
    parties: set[str] = set()
    notice: list[int] = []
    granted = False
    for sentence in parts:
        if not _TERMINATE.search(sentence):
            continue
        if not _CONVENIENCE.search(sentence) and (_CAUSE.search(sentence) or not notice_days(sentence)):
            continue  # termination for cause, or no right to terminate at all; on notice alone is convenience
        found = actors(sentence, _TERMINATE_BY, _TERMINATED_BY)
        allowed = [name for name, negated in found if not negated]
        if found and not allowed:
            continue  # "Customer may not terminate for convenience"
        granted = True
        parties.update(allowed)
        notice.extend(notice_days(sentence))
    if not granted:
        return ("none", "termination only for cause") if titled and _TERMINATE.search(text) else None
    on_notice = ""
    if notice:
        shortest = period(min(notice))
        possessive = "'" if shortest.endswith("s") else "'s"
        on_notice = f" on {shortest}{possessive} notice"
    if "mutual" in parties or len(parties) >= 2:
        level: Level = "low" if notice and min(notice) < 30 else "none"
        return level, f"either party may terminate for convenience{on_notice}"
    if not parties:
        return "medium", f"the agreement may be terminated for convenience{on_notice}; it is unclear by whom"
    return "high", f"only {sorted(parties)[0]} may terminate for convenience{on_notice} (one-sided)"


_INDEMNIFY_BY = actors_pattern(r"indemnif\w*|defend|hold\s+harmless|keep\s+\w+\s+indemnified")
_INDEMNIFIED_BY = passive_pattern(r"indemnified|held\s+harmless")
_INDEMNITY = re.compile(r"\bindemnif|\bhold\s+harmless\b|\bheld\s+harmless\b", re.I)
_BROAD = re.compile(r"\bany\s+and\s+all\b|\bhowsoever\b|\bhowever\s+arising|\bregardless\b|\ball\s+claims\b", re.I)
_IP_ONLY = re.compile(r"\binfring", re.I)


def assess_indemnity(text: str, parts: list[str], titled: bool) -> Assessment | None:
    giving = [sentence for sentence in parts if _INDEMNITY.search(sentence)]
    if not giving:
        return None
    parties = {name for sentence in giving for name, negated in actors(sentence, _INDEMNIFY_BY, _INDEMNIFIED_BY)}
    if "mutual" in parties or len(parties) >= 2:
        return "low", "mutual indemnities"
    if not parties:
        return ("low", "indemnity with no clear indemnifying party") if titled else None
    who = next(iter(parties))
    scope = " ".join(giving)
    if _IP_ONLY.search(scope) and not _BROAD.search(scope):
        return "medium", f"one-sided indemnity: only {who} indemnifies, limited to infringement claims"
    breadth = ", for any and all claims" if _BROAD.search(scope) else ""
    return "high", f"one-sided indemnity: only {who} indemnifies the other party{breadth}"


_PERSONAL_DATA = re.compile(r"\bpersonal\s+(?:data|information)\b|\bpatient\s+records\b|\bdata\s+subjects?\b", re.I)
_NON_EEA = (
    r"United\s+States|USA|U\.S\.|US|India|China|Russia|Brazil|Philippines|Mexico|South\s+Africa|Vietnam"
    r"|Indonesia|Pakistan|Egypt|Turkey|Ukraine|Malaysia|Nigeria"
)
_ANYWHERE = r"any\s+(?:other\s+)?(?:country|countries|jurisdiction|location|territory)"
_TRANSFER = re.compile(
    r"\b(?:outside|beyond)\s+(?:of\s+)?(?:the\s+)?"
    r"(?:EEA|European\s+Economic\s+Area|European\s+Union|EU|UK|United\s+Kingdom)\b"
    r"|\bthird\s+countr|\bcross-border\b|\binternational(?:ly)?\s+transfer"
    rf"|\b(?:transfer|stor|process|host|access|locat|server)\w*\b[^.]{{0,160}}?\b{_ANYWHERE}"
    rf"|(?P<named>\b(?:transfer|stor|process|host|access|locat|server)\w*\b[^.]{{0,120}}?"
    rf"\b(?:in|to|from)\W+(?:the\s+)?(?-i:{_NON_EEA})\b)",
    re.I,
)
_EU_CONTEXT = re.compile(r"\bEEA\b|\bEuropean\b|\bEU\b|GDPR|\bUK\b|United\s+Kingdom", re.I)
_NO_TRANSFER = re.compile(
    r"\b(?:shall|will|must|may)\s+not\s+(?:\w+\s+){0,3}?(?:transfer|store|process|host)"
    r"|\bnot\s+(?:be\s+)?(?:transferred|stored|processed)",
    re.I,
)
SAFEGUARDS = re.compile(
    r"standard\s+contractual\s+clauses|\bSCCs?\b|adequacy\s+decision|binding\s+corporate\s+rules|\bBCRs?\b"
    r"|appropriate\s+safeguards|Data\s+Privacy\s+Framework|\bIDTA\b|international\s+data\s+transfer\s+agreement",
    re.I,
)


def assess_data_transfer(text: str, parts: list[str], titled: bool) -> Assessment | None:
    if not _PERSONAL_DATA.search(text):
        return None
    transfers = []
    for sentence in parts:
        match = _TRANSFER.search(sentence)
        if match and not _NO_TRANSFER.search(sentence) and (not match["named"] or _EU_CONTEXT.search(text)):
            transfers.append(sentence)
    if not transfers:
        return ("none", "personal data stays where it is; no cross-border transfer") if titled else None
    if safeguard := SAFEGUARDS.search(text):
        return "low", f"cross-border transfer of personal data, with safeguards ({safeguard[0]})"
    return "high", f"personal data transferred abroad without safeguards: “{quote(transfers[0])}”"


_FEE_CHANGE = re.compile(
    r"\b(?:increase|change|adjust|revise|vary|modify|amend|raise|update)\w*\b[^.]{0,60}?"
    r"\b(?:fees|prices?|charges|rates|pricing|tariffs?)\b"
    r"|\b(?:fees|prices?|charges|rates|pricing)\b[^.]{0,60}?"
    r"\b(?:increase|change|adjust|revise|vary|modif|amend|raise)\w*",
    re.I,
)
_FIXED_FEES = re.compile(
    r"\b(?:shall|will|may)\s+not\s+(?:be\s+)?(?:increase|change|adjust|revise|vary)|\bfixed\b", re.I
)
_AGREED_CHANGE = re.compile(
    r"\bmutual(?:ly)?\s+agree|\bagreed\s+(?:in\s+writing\s+)?(?:by|between)\s+(?:both|the)\s+parties"
    r"|\bwritten\s+agreement\s+of\s+(?:both|the)\s+parties|\bsigned\s+by\s+both",
    re.I,
)
_PRICE_CAP = re.compile(
    r"\bCPI\b|consumer\s+price\s+index|\bRPI\b|\binflation\b|\bnot\s+(?:to\s+)?exceed|\bcapped\b|\bno\s+more\s+than"
    r"|\bmaximum\s+of\b|\bup\s+to\s+\d+(?:\.\d+)?\s*%",
    re.I,
)
_CHANGE_BY = actors_pattern(r"increase|change|adjust|revise|vary|modify|amend|raise|update")
_CHANGED_BY = passive_pattern(r"increased|changed|adjusted|revised|varied|modified|amended|raised|updated")
_EXIT_RIGHT = re.compile(r"\bterminat|\bcancel", re.I)


def assess_fee_change(text: str, parts: list[str], titled: bool) -> Assessment | None:
    changes = [sentence for sentence in parts if _FEE_CHANGE.search(sentence) and not _FIXED_FEES.search(sentence)]
    if not changes:
        return None
    scope = " ".join(changes)
    if _AGREED_CHANGE.search(scope):
        return "none", "fee changes need both parties' agreement"
    parties = {
        name for sentence in changes for name, negated in actors(sentence, _CHANGE_BY, _CHANGED_BY) if not negated
    }
    parties.discard("mutual")
    if not parties:
        return "low", "the fees may change; no party is given a unilateral right"
    who = sorted(parties)[0]
    if _PRICE_CAP.search(scope):
        return "low", f"{who} may change the fees, within a cap"
    if _EXIT_RIGHT.search(text):
        return "medium", f"{who} may change the fees unilaterally; the other party may terminate instead"
    return "high", f"{who} may change the fees unilaterally, without a cap"


_INTEREST = re.compile(
    r"\binterest\b[^.]{0,80}?(?P<rate>\d+(?:\.\d+)?)\s*(?:%|per\s*cent)\s*(?:\(\w+\)\s*)?"
    r"(?P<period>per\s+(?:month|annum|year)|a\s+(?:month|year)|monthly|annually|p\.?\s?a\b)",
    re.I,
)
_PAYMENT_DAYS = re.compile(
    r"\bpa(?:y|ys|id|yable|yment)\b[^.]{0,60}?\bwithin\s+(?:\w+\s+)?\(?(\d{1,3})\)?\s+days\b", re.I
)


def assess_payment(text: str, parts: list[str], titled: bool) -> Assessment | None:
    interest = _INTEREST.search(text)
    if interest:
        rate = float(interest["rate"]) * (12 if "month" in interest["period"].lower() else 1)
        reason = f"late-payment interest of {rate:g}% a year"
        if rate > 20:
            return "high", reason
        if rate > 12:
            return "medium", reason
        return "none", reason
    days = [int(match[1]) for match in _PAYMENT_DAYS.finditer(text)]
    if days and min(days) < 15:
        return "low", f"short payment term: {min(days)} days"
    return ("none", "standard payment terms") if titled else None


_PLACE = re.compile(
    r"\b(?:(?:laws?|courts?|tribunals?)\s+(?:of|in|located\s+in|sitting\s+in)|seated\s+in"
    r"|seat\s+of\s+(?:the\s+)?arbitration\s+(?:shall\s+be|is|will\s+be)(?:\s+in)?"
    r"|venue\s+(?:shall\s+be|is|will\s+be)(?:\s+in)?)"
    r"\s+(?:the\s+)?(?:(?:State|Province|Commonwealth|Republic|Kingdom|Principality|Emirate)\s+of\s+(?:the\s+)?)?"
    r"(?P<place>(?-i:[A-Z][\w'’-]*(?:\s+(?:and\s+)?[A-Z][\w'’-]*)*))",
    re.I,
)
_AND = re.compile(r"\s+and\s+")
_ALLOWED = frozenset(name.lower() for name in ALLOWED_JURISDICTIONS)


def _allowed(place: str) -> bool:
    return all(part.strip().lower() in _ALLOWED for part in _AND.split(place))


def assess_governing_law(text: str, parts: list[str], titled: bool) -> Assessment | None:
    places = list(dict.fromkeys(match["place"] for match in _PLACE.finditer(text)))
    if not places:
        return ("low", "no governing law or venue identified") if titled else None
    unusual = [place for place in places if not _allowed(place)]
    if unusual:
        return "high", f"governing law or venue outside the usual jurisdictions: {', '.join(unusual)}"
    if len(places) > 1 and len({place.split(" and ")[0] for place in places}) > 1:
        return "low", f"governing law and venue differ: {', '.join(places)}"
    return "none", f"governed by the law of {places[0]}"


_CONFIDENTIAL = re.compile(r"\bconfidential", re.I)
_PERPETUAL = re.compile(
    r"\bperpetu\w*|\bindefinite(?:ly)?\b|\bwithout\s+(?:time\s+)?limit(?!ation)|\bno\s+time\s+limit|\bfor\s*ever\b",
    re.I,
)


def assess_confidentiality(text: str, parts: list[str], titled: bool) -> Assessment | None:
    if not _CONFIDENTIAL.search(text):
        return None
    if any(_PERPETUAL.search(sentence) for sentence in parts if _CONFIDENTIAL.search(sentence) or titled):
        return "medium", "confidentiality obligations never expire"
    years = [days // 365 for days in quantities_in_days(text) if days >= 365]
    if titled:
        return "none", f"confidentiality for {max(years)} years" if years else "standard confidentiality terms"
    return None


_PRE_EXISTING = re.compile(
    r"\b(?:pre-?existing|background|prior)\s+(?:intellectual\s+property|IP|materials|technology|know-how)", re.I
)
_ASSIGN = re.compile(r"\bassign|\bvest|\btransfer|\bbecome\s+the\s+(?:sole\s+|exclusive\s+)?property", re.I)
_RETAIN = re.compile(r"\bretain|\bremain|\bnothing\s+in\s+this|\bnot\s+(?:be\s+)?(?:assign|transfer)", re.I)


def assess_ip(text: str, parts: list[str], titled: bool) -> Assessment | None:
    for sentence in parts:
        if _PRE_EXISTING.search(sentence) and _ASSIGN.search(sentence) and not _RETAIN.search(sentence):
            return "high", f"pre-existing intellectual property is assigned: “{quote(sentence)}”"
    return ("none", "no assignment of pre-existing IP") if titled else None


_EXCLUSIVE = re.compile(
    r"\bexclusive\s+(?:supplier|provider|vendor|distributor|reseller|basis|dealing|arrangement|partner)"
    r"|\bexclusivity\b|\bexclusively\s+(?:from|with|through)"
    r"|\bshall\s+not\s+(?:\w+\s+){0,3}?(?:procure|purchase|obtain|source|buy)\b[^.]{0,80}"
    r"\bfrom\s+any\s+(?:other|third)",
    re.I,
)


def assess_exclusivity(text: str, parts: list[str], titled: bool) -> Assessment | None:
    match = _EXCLUSIVE.search(text)
    if match:
        return "medium", f"exclusivity: “{match[0]}”"
    return ("none", "no exclusivity") if titled else None


_SOLICIT = re.compile(
    r"\b(?:solicit|entice|poach)\w*\b[^.]{0,100}?\b(?:employees?|personnel|staff|contractors?)\b"
    r"|\bnot\s+(?:\w+\s+){0,4}?(?:hire|employ|engage)\b[^.]{0,60}?\b(?:employees?|personnel|staff)\b",
    re.I,
)


def assess_non_solicitation(text: str, parts: list[str], titled: bool) -> Assessment | None:
    restricted = [sentence for sentence in parts if _SOLICIT.search(sentence)]
    if not restricted:
        return None
    months = [days // 30 for sentence in restricted for days in quantities_in_days(sentence)]
    if not months:
        return "medium", "non-solicitation of staff with no time limit"
    if max(months) > 12:
        return "medium", f"non-solicitation of staff for {max(months)} months"
    return "low", f"non-solicitation of staff for {max(months)} months"


# Title cues and assessors, most specific first (ties between equal levels go to the earlier one).
TOPICS: tuple[tuple[str, re.Pattern[str], Callable[[str, list[str], bool], Assessment | None]], ...] = tuple(
    (category, re.compile(cue, re.I), assess)
    for category, cue, assess in (
        ("data_transfer", r"\bdata\b|privacy|personal\s+information|\bgdpr\b", assess_data_transfer),
        ("indemnity", r"indemn|hold\s+harmless", assess_indemnity),
        ("liability", r"liabilit|\bdamages\b|limitation", assess_liability),
        ("auto_renewal", r"renew|\bterm\b|duration", assess_auto_renewal),
        ("termination", r"terminat|\bterm\b|cancell", assess_termination),
        ("fee_change", r"pric|\bfees?\b|charges|\brates\b", assess_fee_change),
        ("governing_law", r"governing|\blaw\b|jurisdiction|disputes?|venue|arbitration", assess_governing_law),
        ("ip", r"intellectual|ownership|\bip\b|proprietary|licen[cs]", assess_ip),
        ("exclusivity", r"exclusiv", assess_exclusivity),
        ("non_solicitation", r"solicit|non-?hire|poach", assess_non_solicitation),
        ("confidentiality", r"confidential|non-?disclosure", assess_confidentiality),
        ("payment", r"payment|invoic|\bfees?\b|charges|billing", assess_payment),
    )
)

# The fallback rater's keywords: a mention is enough.
BASIC_KEYWORDS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (category, re.compile(pattern, re.I))
    for category, pattern in (
        ("liability", r"\bliab(?:le|ility)\b"),
        ("indemnity", r"\bindemn\w*"),
        ("auto_renewal", r"\brenew\w*"),
        ("termination", r"\bterminat\w*"),
        ("data_transfer", r"\bpersonal\s+(?:data|information)\b|\btransfer\w*\b"),
        ("fee_change", r"\b(?:increase|change|adjust)\w*\s+(?:the\s+)?(?:fees|prices?|charges)\b"),
        ("governing_law", r"\bgoverned\s+by\b|\bjurisdiction\b"),
        ("confidentiality", r"\bconfidential\w*"),
        ("payment", r"\binterest\b|\blate\s+payment\b"),
        ("ip", r"\bintellectual\s+property\b"),
        ("exclusivity", r"\bexclusiv(?:e|ity)\s+(?:supplier|provider|basis|right)"),
        ("non_solicitation", r"\bsolicit\w*"),
    )
)
