"""The heuristics behind the document_pipeline agents: field extraction and evidence scoring.

Every function here is a pure function of its arguments (no clock, randomness or I/O), so the
agents built on them are deterministic and safe to replay.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import cast

from ensemble.examples.document_pipeline.models import LABELS, Extraction, Label, Money

Span = tuple[int, int]

# --- dates -------------------------------------------------------------------------------------

_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1
    )
}
_MONTH = (
    r"(?P<mon>jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DAY = r"(?P<d>\d{1,2})(?:st|nd|rd|th)?"
_YEAR_FIRST_DATE = re.compile(r"\b(?P<y>\d{4})(?P<sep>[-/.])(?P<m>\d{1,2})(?P=sep)(?P<d>\d{1,2})\b")
_NUMERIC_DATE = re.compile(r"\b(?P<a>\d{1,2})(?P<sep>[-/.])(?P<b>\d{1,2})(?P=sep)(?P<y>\d{4})\b")
_MONTH_FIRST_DATE = re.compile(rf"\b{_MONTH}\s+{_DAY},?\s+(?P<y>\d{{4}})\b", re.I)
_DAY_FIRST_DATE = re.compile(rf"\b{_DAY}(?:\s+of)?[\s-]+{_MONTH}[\s,-]+(?P<y>\d{{4}})\b", re.I)

# --- money -------------------------------------------------------------------------------------

_CURRENCY_SYMBOLS = {"$": "USD", "US$": "USD", "€": "EUR", "£": "GBP"}
_CURRENCY_CODES = "USD|EUR|GBP|CAD|AUD|CHF|JPY"
_NUMBER = r"\d{1,3}(?:[,.\u00a0\u202f]\d{3}){1,4}(?:[.,]\d{1,2})?|\d{1,15}(?:[.,]\d{1,2})?"
_MONEY = re.compile(
    rf"(?P<pre>US\$|[$€£]|\b(?:{_CURRENCY_CODES})\b)\s?(?P<n1>{_NUMBER})(?!\d)"
    rf"|(?<![\d.,])(?P<n2>{_NUMBER})\s?(?P<post>[$€£]|\b(?:{_CURRENCY_CODES})\b)(?!\s?\d)"
)
_TOTAL_STRONG = re.compile(
    r"\b(?:amount|balance|total)\s+(?:due|payable|owing|outstanding)\b|\bgrand\s+total\b"
    r"|\btotal\s+amount\b|\bamount\s+payable\b|\btotal\s+\(?incl",
    re.I,
)
_TOTAL_WEAK = re.compile(r"(?<!sub-)(?<!sub )\btotal\b", re.I)

# --- contact details ---------------------------------------------------------------------------

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_PHONE = re.compile(r"(?<![\w+/.,-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d{2,5}(?:[ .-]\d{2,8}){1,4}(?![\w/-])")
_PHONE_LABEL = re.compile(r"\b(?:phone|tel|telephone|mobile|cell|fax|call|ph|whatsapp)\b", re.I)

# --- identifiers -------------------------------------------------------------------------------

_QUALIFIER = r"(?P<qual>numbers?|no\.?|num\.?|nr\.?|#|id|ref\.?)"
_ID = r"(?P<id>[A-Z0-9][A-Z0-9/-]*\d[A-Z0-9/-]*)"
_INVOICE_NO = re.compile(rf"\binvoice\s*{_QUALIFIER}?(?:\s+is)?\s*[:#.]?\s*{_ID}", re.I)
_INVOICE_TOKEN = re.compile(r"\bINV[-/#]?\d[\w/-]*")
_PO_NO = re.compile(rf"\b(?:purchase\s+order|P\.?O\.?)\s*{_QUALIFIER}?(?:\s+is)?\s*[:#.]?\s*{_ID}", re.I)
_PO_TOKEN = re.compile(r"\bPO-?(?:[A-Z]{1,4}-)*\d[\w/-]*")
_REFERENCE = re.compile(
    r"\b(?P<kw>ref(?:erence)?|ticket|case|order|customer|client|claim|booking|tracking|quote|quotation"
    rf"|incident|request|employee|member|policy|contract|agreement|account)\s*{_QUALIFIER}?(?:\s+is)?"
    rf"\s*[:#.]?\s*{_ID}",
    re.I,
)

# --- headers, names, parties -------------------------------------------------------------------

_HEADER_LINE = re.compile(
    r"^[ \t]*(?P<key>from|to|cc|bcc|subject|subj|re|date|sent)[ \t]*:[ \t]*(?P<value>\S.*?)[ \t]*$", re.I | re.M
)
_SIGN_OFF = re.compile(
    r"^[ \t]*(?:(?:best|kind|warm|warmest)\s+regards|regards|sincerely|yours\s+(?:sincerely|faithfully|truly)"
    r"|best(?:\s+wishes)?|thanks|thank\s+you|many\s+thanks|cheers|respectfully)"
    r"(?:\s+for\s+your\s+\w+)?[ \t]*[,.!]?[ \t]*$",
    re.I | re.M,
)
_PERSON_NAME = re.compile(r"[A-Z][A-Za-z'.-]*(?:\s+[A-Z][A-Za-z'.-]*){0,3}")
_EMPLOYEE = re.compile(
    r"^[ \t]*(?:employee(?:\s+(?:full\s+)?name)?|new\s+(?:hire|starter|joiner|employee)(?:\s+name)?"
    r"|staff\s+member|team\s+member)[ \t]*:[ \t]*(?P<name>[^\n]+)",
    re.I | re.M,
)
_NAME_END = re.compile(r"\s*(?:[(,;|]|\s[-–]\s)")
_BETWEEN = re.compile(r"\bbetween\s+(?P<segment>.{3,400})", re.I)
_SENTENCE_END = re.compile(r"(?<![\s.(][A-Z])(?<=[A-Za-z0-9)\"”])\.(?=\s+[A-Z]|\s*$)|;(?!\s*and\b)")
_ABBREVIATED_SUFFIX = re.compile(r"\b(?:Inc|Ltd|Corp|Co|Pty)$")
_PARTY_SPLITS = (
    re.compile(r"\)\s*,?\s+and\s+"),
    re.compile(r";\s*and\s+"),
    re.compile(r",\s+and\s+"),
    re.compile(r"\s+and\s+"),
)
_PARTY_END = re.compile(
    r"\s*\(|,\s+(?:a|an|the|with|having|whose|located|registered|incorporated|organi[sz]ed|acting|represented"
    r"|residing|doing)\b|\s+(?:with\s+(?:its\s+)?(?:offices|principal|registered)|having\s+its|located\s+at)\b"
    r"|:"
)
_NOT_PARTIES = frozenset(
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May June July"
    " August September October November December".split()
)
_ENUMERATOR = re.compile(r"^\(?(?:\d{1,2}|[ivx]{1,4}|[a-c])\)\s*")
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
_LETTER = re.compile(r"[^\W\d_]")


def _iso(year: int, month: int, day: int) -> str | None:
    if not 1900 <= year <= 2199:
        return None
    try:
        return date(year, month, day).isoformat()
    except ValueError:
        return None


def _find_dates(text: str) -> list[tuple[Span, str]]:
    """Every parseable date with its span, in order of appearance, overlaps removed.

    An all-numeric date is day-first when its first number is above 12 and month-first when its
    second is; otherwise the document's own unambiguous numeric dates decide, and day-first wins
    when they do not.
    """
    numeric = list(_NUMERIC_DATE.finditer(text))
    month_first_votes = sum(1 for m in numeric if int(m["a"]) <= 12 < int(m["b"]))
    day_first_votes = sum(1 for m in numeric if int(m["b"]) <= 12 < int(m["a"]))
    month_first = month_first_votes > day_first_votes

    found: list[tuple[Span, str | None]] = []
    for m in _YEAR_FIRST_DATE.finditer(text):
        found.append((m.span(), _iso(int(m["y"]), int(m["m"]), int(m["d"]))))
    for m in numeric:
        a, b = int(m["a"]), int(m["b"])
        if a > 12 or (b <= 12 and not month_first):
            found.append((m.span(), _iso(int(m["y"]), b, a)))
        else:
            found.append((m.span(), _iso(int(m["y"]), a, b)))
    for pattern in (_MONTH_FIRST_DATE, _DAY_FIRST_DATE):
        for m in pattern.finditer(text):
            found.append((m.span(), _iso(int(m["y"]), _MONTHS[m["mon"][:3].lower()], int(m["d"]))))

    result: list[tuple[Span, str]] = []
    last_end = -1
    for span, iso in sorted(found, key=lambda item: (item[0][0], -item[0][1])):
        if iso is not None and span[0] >= last_end:
            result.append((span, iso))
            last_end = span[1]
    return result


def _parse_number(raw: str) -> float:
    """Read 1,234.56 / 1.234,56 / 1234,5 / 1,234: the last separator is decimal unless three digits follow it."""
    digits = raw.replace("\u00a0", "").replace("\u202f", "")
    last_comma, last_dot = digits.rfind(","), digits.rfind(".")
    if last_comma >= 0 and last_dot >= 0:
        decimal = "," if last_comma > last_dot else "."
    elif max(last_comma, last_dot) >= 0:
        separator = "," if last_comma >= 0 else "."
        single = digits.count(separator) == 1 and len(digits) - digits.rfind(separator) - 1 != 3
        decimal = separator if single else ""
    else:
        decimal = ""
    whole, _, fraction = digits.rpartition(decimal) if decimal else (digits, "", "")
    whole = whole.replace(",", "").replace(".", "")
    return float(f"{whole}.{fraction}" if fraction else whole)


def _find_money(text: str) -> list[tuple[Span, Money]]:
    found: list[tuple[Span, Money]] = []
    for m in _MONEY.finditer(text):
        symbol = m["pre"] or m["post"]
        currency = _CURRENCY_SYMBOLS.get(symbol, symbol)
        found.append((m.span(), Money(value=_parse_number(m["n1"] or m["n2"]), currency=currency)))
    return found


def _find_total(text: str) -> Money | None:
    """The largest amount on the strongest total line ("amount due" beats "total"), else the largest amount.

    A short total line without an amount (a label above its value) takes the next line's amounts.
    """
    lines = text.splitlines()
    best_rank, candidates = 0, list[Money]()
    for index, line in enumerate(lines):
        rank = 2 if _TOTAL_STRONG.search(line) else 1 if _TOTAL_WEAK.search(line) else 0
        if rank == 0 or rank < best_rank:
            continue
        amounts = [money for _, money in _find_money(line)]
        if not amounts and len(_WORD.findall(line)) <= 4:
            following = next((later for later in lines[index + 1 :] if later.strip()), "")
            amounts = [money for _, money in _find_money(following)]
        if not amounts:
            continue
        if rank > best_rank:
            best_rank, candidates = rank, []
        candidates.extend(amounts)
    pool = candidates or [money for _, money in _find_money(text)]
    return max(pool, key=lambda money: money.value) if pool else None


def _find_phones(text: str, taken: list[Span]) -> list[str]:
    """Digit groups that look like a phone number: international (+) or area-code form, or on a labelled line."""
    phones: list[str] = []
    seen: set[str] = set()
    for m in _PHONE.finditer(text):
        number = m.group()
        digits = re.sub(r"\D", "", number)
        if not 7 <= len(digits) <= 15 or digits in seen:
            continue
        if any(start < m.end() and m.start() < end for start, end in taken):
            continue
        line_start = text.rfind("\n", 0, m.start()) + 1
        line_end = text.find("\n", m.end())
        line = text[line_start : line_end if line_end >= 0 else len(text)]
        if number[0] in "+(" or _PHONE_LABEL.search(line):
            seen.add(digits)
            phones.append(number)
    return phones


def _valid_id(identifier: str, qualified: bool) -> bool:
    """An identifier after a bare keyword must carry a letter, a separator or at least four digits."""
    if len(identifier) < 3 or _NUMERIC_DATE.fullmatch(identifier) or _YEAR_FIRST_DATE.fullmatch(identifier):
        return False
    return qualified or bool(re.search(r"[A-Za-z/-]", identifier)) or len(identifier) >= 4


def _first_id(text: str, labelled: re.Pattern[str], token: re.Pattern[str]) -> str | None:
    hits = [
        (m.start("id"), m["id"].strip("/-"))
        for m in labelled.finditer(text)
        if _valid_id(m["id"].strip("/-"), bool(m["qual"]))
    ]
    hits += [(m.start(), m.group().strip("/-")) for m in token.finditer(text)]
    return min(hits)[1] if hits else None


def _reference_numbers(text: str, exclude: set[str | None]) -> list[str]:
    references: list[str] = []
    for m in _REFERENCE.finditer(text):
        identifier = m["id"].strip("/-")
        if m["kw"].lower() == "account" and (m["qual"] or "").lower() not in {"#", "id"}:
            continue
        if _valid_id(identifier, bool(m["qual"])) and identifier not in exclude and identifier not in references:
            references.append(identifier)
    return references


def _headers(text: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for m in _HEADER_LINE.finditer(text):
        key = "subject" if m["key"].lower() == "subj" else m["key"].lower()
        headers.setdefault(key, m["value"])
    return headers


def _signed_name(text: str) -> str | None:
    for m in _SIGN_OFF.finditer(text):
        following = next((line.strip() for line in text[m.end() :].splitlines() if line.strip()), "")
        if _PERSON_NAME.fullmatch(following):
            return following
    return None


def _employee(text: str) -> str | None:
    for m in _EMPLOYEE.finditer(text):
        name = _NAME_END.split(m["name"], maxsplit=1)[0].strip()
        if re.fullmatch(r"[A-Za-z][A-Za-z .'-]{1,60}", name):
            return name
    return None


def _sentence(segment: str) -> str:
    """`segment` up to the end of its first sentence, keeping the period of a final "Inc."/"Ltd."/"Corp.".

    A period ends a sentence when a capitalised word follows, unless it closes an initial ("J.").
    """
    end = _SENTENCE_END.search(segment)
    if end is None:
        return segment
    if segment[end.start()] == "." and _ABBREVIATED_SUFFIX.search(segment[: end.start()]):
        return segment[: end.start() + 1]
    return segment[: end.start()]


def _clean_party(raw: str) -> str | None:
    name = _ENUMERATOR.sub("", raw.strip())
    name = _PARTY_END.split(name, maxsplit=1)[0].strip(" ,;:\"'“”")
    if name.startswith("the "):
        name = name[4:]
    words = name.split()
    if not name[:1].isupper() or not 1 <= len(words) <= 8 or len(name) > 80 or words[0] in _NOT_PARTIES:
        return None
    return name


def _contract_parties(text: str) -> list[str]:
    """The two sides of each "between X and Y" clause, trimmed of descriptions and defined terms."""
    parties: list[str] = []
    for paragraph in re.split(r"\n[ \t]*\n", text):
        flat = " ".join(paragraph.split())
        for m in _BETWEEN.finditer(flat):
            segment = _sentence(m["segment"])
            split = next((s for s in (p.search(segment) for p in _PARTY_SPLITS) if s), None)
            if split is None:
                continue
            pair = (_clean_party(segment[: split.start()]), _clean_party(segment[split.end() :]))
            if pair[0] and pair[1]:
                parties.extend(party for party in pair if party and party not in parties)
    return parties


def _title(text: str, subject: str | None) -> str | None:
    if subject:
        return subject
    for line in text.splitlines():
        candidate = line.strip().rstrip(":").strip()
        if len(_LETTER.findall(candidate)) >= 3 and not _HEADER_LINE.match(line):
            return candidate[:120]
    return None


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def extract_fields(text: str) -> Extraction:
    """All fields of `Extraction` found in `text` (see the extractor agent for the rules)."""
    dates = _find_dates(text)
    money = _find_money(text)
    headers = _headers(text)
    subject = headers.get("subject") or headers.get("re")
    amounts: list[Money] = []
    for _, amount in money:
        if amount not in amounts:
            amounts.append(amount)
    invoice_number = _first_id(text, _INVOICE_NO, _INVOICE_TOKEN)
    po_number = _first_id(text, _PO_NO, _PO_TOKEN)
    return Extraction(
        title=_title(text, subject),
        emails=_dedupe([email.lower() for email in _EMAIL.findall(text)]),
        phones=_find_phones(text, [span for span, _ in dates] + [span for span, _ in money]),
        dates=_dedupe([iso for _, iso in dates]),
        amounts=amounts,
        total=_find_total(text),
        invoice_number=invoice_number,
        po_number=po_number,
        contract_parties=_contract_parties(text),
        sender=headers.get("from") or _signed_name(text),
        subject=subject,
        employee=_employee(text),
        reference_numbers=_reference_numbers(text, {invoice_number, po_number}),
        word_count=len(_WORD.findall(text)),
    )


# --- evidence scoring --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cue:
    """A phrase that counts `weight` towards `label` per occurrence, up to `cap` occurrences."""

    label: Label
    pattern: re.Pattern[str]
    weight: float
    cap: int = 1


def _cue(label: Label, pattern: str, weight: float, cap: int = 1) -> _Cue:
    return _Cue(label, re.compile(pattern, re.I), weight, cap)


_CUES: tuple[_Cue, ...] = (
    _cue("invoice", r"\binvoice[sd]?\b", 1.0, cap=3),
    _cue("invoice", r"\bbill(?:ed)?\s+to\b", 2.0),
    _cue("invoice", r"\b(?:amount|balance|total)\s+(?:due|payable|owing|outstanding)\b", 2.5),
    _cue("invoice", r"\bsub-?\s?total\b", 1.5),
    _cue("invoice", r"\bpayment\s+(?:terms|due)\b|\bdue\s+(?:date|by)\b|\bnet\s+\d{1,3}\b", 1.5),
    _cue("invoice", r"\bremit(?:tance)?\b|\bpay(?:able)?\s+to\b|\bplease\s+(?:pay|transfer|remit)\b", 1.5),
    _cue("invoice", r"\b(?:iban|swift|bic|sort\s+code|routing\s+(?:number|no)|bank\s+(?:transfer|details))\b", 1.5),
    _cue("invoice", r"\b(?:vat|sales\s+tax|gst)\b", 1.0),
    _cue("invoice", r"\b(?:overdue|past\s+due|payment\s+reminder)\b", 1.5),
    _cue("invoice", r"\bfor\s+services\s+rendered\b|\bthank\s+you\s+for\s+your\s+business\b", 1.0),
    _cue("invoice", r"\b(?:unit\s+price|rate|qty|hours|hrs)\b", 0.5),
    _cue("purchase_order", r"\bpurchase\s+orders?\b", 2.5, cap=2),
    _cue(
        "purchase_order",
        r"\b(?:ship|deliver)\s+to\b|\bdelivery\s+(?:address|date|location)\b|\brequested\s+delivery\b",
        2.0,
    ),
    _cue("purchase_order", r"\b(?:vendor|supplier)\b", 1.0),
    _cue(
        "purchase_order",
        r"\bplease\s+(?:supply|deliver|ship|send\s+us)\b|\bwe\s+(?:would\s+like|wish|want)\s+to\s+order\b"
        r"|\bplace\s+an\s+order\b|\border\s+the\s+following\b"
        r"|\bconfirm\s+(?:acceptance\s+of\s+)?(?:this|our)\s+order\b",
        2.5,
    ),
    _cue("purchase_order", r"\b(?:sku|part\s+(?:no|number|#)|item\s+(?:no|code|#))\b", 1.0),
    _cue("purchase_order", r"\b(?:qty|quantity|units?|unit\s+price)\b", 0.5, cap=2),
    _cue("purchase_order", r"\b(?:procurement|purchasing|buyer|authori[sz]ed\s+by)\b", 1.0),
    _cue("purchase_order", r"\border\s+(?:date|number|no)\b", 1.0),
    _cue("contract", r"\bagreement\b", 1.5, cap=3),
    _cue("contract", r"\b(?:whereas|hereinafter|hereby|hereto|hereunder|herein|thereof|witnesseth)\b", 1.5, cap=3),
    _cue("contract", r"\bgoverning\s+law\b|\bgoverned\s+by\s+the\s+laws?\b|\bjurisdiction\b", 2.0),
    _cue("contract", r"\bindemnif\w*|\blimitation\s+of\s+liability\b|\bliab(?:le|ility)\b", 1.5),
    _cue("contract", r"\bterminat(?:e|ion)\b", 1.0),
    _cue("contract", r"\bconfidential\s+information\b|\bnon-?disclosure\b", 2.0),
    _cue("contract", r"\bpart(?:y|ies)\b", 0.5, cap=4),
    _cue("contract", r"\bshall\b", 0.5, cap=4),
    _cue(
        "contract",
        r"\beffective\s+date\b|\bin\s+witness\s+whereof\b|\bentire\s+agreement\b|\bforce\s+majeure\b"
        r"|\bseverability\b",
        2.0,
        cap=2,
    ),
    _cue("contract", r"\b(?:initial|renewal)\s+term\b|\bterm\s+of\s+(?:this|the)\b|\bauthori[sz]ed\s+signatory\b", 1.0),
    _cue(
        "support_email",
        r"\b(?:not|isn't|aren't|stopped|doesn't|does\s+not|won't|can't|cannot|unable\s+to)\s+(?:\w+\s+){0,2}"
        r"(?:work(?:ing|s)?|load(?:ing)?|log\s*in|login|sign\s+in|access|connect|open|receive|go\s+through|arrive"
        r"|turn\s+on|start|boot|print|sync|install|update|respond(?:ing)?)\b",
        2.5,
        cap=2,
    ),
    _cue(
        "support_email",
        r"\b(?:error|bug|crash(?:es|ed|ing)?|broken|glitch|outage|downtime)\b"
        r"|\b(?:is|are|was|were|went|been|still|completely|totally)\s+down\b",
        1.5,
        cap=3,
    ),
    _cue("support_email", r"\b(?:help|assist(?:ance)?|support)\b", 1.0, cap=2),
    _cue("support_email", r"\b(?:ticket|case\s+(?:number|#|id)|escalat\w*)\b", 1.5),
    _cue(
        "support_email",
        r"\b(?:password|reset|locked\s+out|two-factor|2fa|verification\s+(?:code|e-?mail)|username)\b",
        1.5,
        cap=2,
    ),
    _cue(
        "support_email",
        r"\b(?:refund|charged\s+twice|double[- ]charged|overcharged|duplicate\s+(?:charge|payment|debit)"
        r"|(?:incorrectly|wrongly)\s+charged|wrong\s+amount|dispute)\b",
        2.0,
        cap=2,
    ),
    _cue(
        "support_email",
        r"\b(?:was|were|been|got|being)\s+(?:charged|billed|debited)\b|\bcard\s+ending\b"
        r"|\b(?:i|we)\s+(?:had\s+|have\s+)?cancel(?:l)?ed\b",
        1.5,
        cap=2,
    ),
    _cue(
        "support_email",
        r"\b(?:complain\w*|disappoint\w*|frustrat\w*|unacceptable|still\s+waiting|no\s+response|haven't\s+heard)\b",
        1.5,
        cap=2,
    ),
    _cue(
        "support_email",
        r"\b(?:my|our)\s+(?:account|order|subscription|device|app|service|store|site|website|login)\b",
        1.0,
    ),
    _cue(
        "support_email",
        r"\b(?:could|can|would)\s+you\s+(?:please\s+)?"
        r"(?:help|look\s+into|check|fix|resolve|investigate|advise|reset)\b"
        r"|\bplease\s+(?:help|fix|resolve|advise|look\s+into|investigate)\b",
        2.0,
    ),
    _cue(
        "support_email",
        r"\b(?:customer\s+(?:support|service)|support\s+team|help\s*desk|help\s+cent(?:re|er)|service\s+desk)\b",
        1.5,
    ),
    _cue(
        "hr_request",
        r"\b(?:annual|sick|parental|maternity|paternity|unpaid|compassionate|bereavement|study)\s+leave\b"
        r"|\bleave\s+(?:request|of\s+absence|balance|type)\b",
        3.0,
    ),
    _cue("hr_request", r"\b(?:time\s+off|pto|vacation|holiday\s+(?:request|allowance)|days?\s+off)\b", 2.0),
    _cue("hr_request", r"\b(?:unwell|sick|doctor's\s+note|fit\s+note|medical\s+appointment)\b", 1.5),
    _cue(
        "hr_request",
        r"\b(?:onboarding|new\s+(?:hire|starter|joiner)|first\s+day|start\s+date|orientation|induction)\b",
        2.0,
        cap=2,
    ),
    _cue(
        "hr_request",
        r"\b(?:payroll|payslip|pay\s+slip|salary|overtime|wages?|paycheck|pay\s+stub|p60|w-2)\b",
        3.0,
        cap=2,
    ),
    _cue("hr_request", r"\b(?:resign(?:ation|ing)?|notice\s+period|last\s+working\s+day)\b", 3.0, cap=3),
    _cue("hr_request", r"\b(?-i:HR)\b|\bhuman\s+resources\b|\bpeople\s+(?:ops|operations|team)\b", 1.5),
    _cue(
        "hr_request",
        r"\b(?:employee|line\s+manager|hiring\s+manager|reporting\s+manager|my\s+manager)\b",
        1.0,
        cap=2,
    ),
    _cue("hr_request", r"\b(?:benefits|pension|health\s+insurance|401\(?k\)?|enrol(?:l)?ment)\b", 1.0),
    _cue(
        "hr_request",
        r"\bwork(?:ing)?\s+from\s+home\b|\bwfh\b|\b(?:remote|flexible|hybrid)\s+working\b|\bpart-time\s+hours\b",
        2.5,
    ),
    _cue("hr_request", r"\b(?:performance\s+review|promotion|grievance|disciplinary|probation|appraisal)\b", 1.5),
    _cue("hr_request", r"\b(?:laptop|badge|access\s+card|equipment)\b", 0.5, cap=2),
    _cue(
        "other",
        r"\b(?:all\s+(?:\w+\s+){0,2}(?:staff|employees|colleagues)|everyone|menu|agenda|minutes|newsletter"
        r"|announcement|all-hands|edition|please\s+note)\b",
        1.0,
        cap=3,
    ),
)

_DOCUMENT_HEADERS: tuple[tuple[Label, re.Pattern[str]], ...] = tuple(
    (cast(Label, label), re.compile(pattern, re.I))
    for label, pattern in (
        ("invoice", r"^(?:(?:tax|vat|commercial|pro[- ]?forma|final|interim)\s+)?invoice\b"),
        ("purchase_order", r"\bpurchase\s+order\b"),
        (
            "contract",
            r"\b(?:agreement|contract|terms\s+(?:and|&)\s+conditions|memorandum\s+of\s+understanding"
            r"|statement\s+of\s+work|addendum)\b",
        ),
        (
            "hr_request",
            r"^(?:(?:annual\s+)?leave|vacation|holiday|time[- ]off|pto|absence)\s+(?:request|application|form)\b"
            r"|\bonboarding\b|^(?:letter\s+of\s+)?resignation\b|^payroll\s+(?:query|request)\b",
        ),
        (
            "other",
            r"^(?:inter-?office\s+)?memo(?:randum)?\b(?!\s+of\s+understanding)"
            r"|\b(?:newsletter|agenda|announcement|minutes|menu)\b",
        ),
    )
)
_GREETING = re.compile(
    r"^[ \t]*(?P<greeting>hi|hello|hey|dear|good\s+(?:morning|afternoon|evening)|to\s+whom\s+it\s+may\s+concern)\b",
    re.I | re.M,
)
_HEADER_SCAN_LINES = 10
_HEADER_MAX_WORDS = 8

_WEIGHT_HEADER = 6.0
_WEIGHT_IDENTIFIER = 3.0
_WEIGHT_PARTIES = 3.0
_WEIGHT_EMPLOYEE = 2.0
_WEIGHT_TOTAL = 1.0
_WEIGHT_EMAIL_HEADERS = 1.5
_WEIGHT_GREETING = 0.5
_OTHER_BASELINE = 2.5

_PENALTY_INVOICE_IN_REQUEST = 4.0
_PENALTY_DOCUMENT_NOT_MESSAGE = 3.0
_PENALTY_HR_TOPIC = 2.5
_SUPPORT_CONTENT_THRESHOLD = 3.0
_HR_CONTENT_THRESHOLD = 4.0


@dataclass
class Evidence:
    """Per-label scores, the reasons behind them, and the penalties applied."""

    scores: dict[Label, float] = field(default_factory=lambda: {label: 0.0 for label in LABELS})
    signals: dict[Label, list[str]] = field(default_factory=lambda: {label: [] for label in LABELS})
    penalties: list[str] = field(default_factory=list)

    def add(self, label: Label, weight: float, signal: str) -> None:
        self.scores[label] += weight
        self.signals[label].append(signal)

    def penalise(self, label: Label, weight: float, reason: str) -> None:
        if self.scores[label] > 0:
            self.scores[label] = max(0.0, self.scores[label] - weight)
            self.penalties.append(f"against {label}: {reason}")


def document_header(text: str) -> tuple[Label, str] | None:
    """The document-type heading among the first lines (e.g. "INVOICE", "Purchase Order", "MEMORANDUM").

    A heading is a short line that starts with a capital and holds no comma, colon or sentence end
    (so "Invoice date: ..." and "Subject: ..." are fields, not headings); the first heading that
    names a document type wins.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()][:_HEADER_SCAN_LINES]
    for line in lines:
        if not line[0].isupper() or re.search(r"[,:;?!]|\.$", line) or len(line.split()) > _HEADER_MAX_WORDS:
            continue
        for label, pattern in _DOCUMENT_HEADERS:
            if pattern.search(line):
                return label, line
    return None


def _mentions(matches: list[re.Match[str]]) -> str:
    counts = Counter(" ".join(match.group().lower().split()) for match in matches)
    return "mentions " + ", ".join(f"'{phrase}'" + (f" (x{n})" if n > 1 else "") for phrase, n in counts.items())


def score_document(text: str, fields: Extraction) -> Evidence:
    """Weigh the evidence for every label: phrases, the document heading, extracted fields, layout.

    Negative signals keep the topic ahead of the medium: a complaint or question that merely
    mentions an invoice is not an invoice, a message about employment is HR rather than support,
    and a document with a formal heading is not a support message.
    """
    text = text.replace("\u2019", "'")
    evidence = Evidence()
    for cue in _CUES:
        matches = list(cue.pattern.finditer(text))[: cue.cap]
        if matches:
            evidence.add(cue.label, cue.weight * len(matches), _mentions(matches))
    topical = dict(evidence.scores)

    header = document_header(text)
    if header:
        evidence.add(header[0], _WEIGHT_HEADER, f"header '{header[1]}'")
    if fields.invoice_number:
        evidence.add("invoice", _WEIGHT_IDENTIFIER, f"has invoice number {fields.invoice_number}")
    if fields.po_number:
        evidence.add("purchase_order", _WEIGHT_IDENTIFIER, f"has PO number {fields.po_number}")
    if len(fields.contract_parties) >= 2:
        evidence.add("contract", _WEIGHT_PARTIES, f"names parties {' and '.join(fields.contract_parties[:2])}")
    if fields.employee:
        evidence.add("hr_request", _WEIGHT_EMPLOYEE, f"names employee {fields.employee}")
    if fields.total:
        total = f"has total {fields.total.value:,.2f} {fields.total.currency}"
        evidence.add("invoice", _WEIGHT_TOTAL, total)
        evidence.add("purchase_order", _WEIGHT_TOTAL, total)
    headers = _headers(text)
    if header is None and "from" in headers and ({"subject", "to"} & headers.keys()):
        evidence.add("support_email", _WEIGHT_EMAIL_HEADERS, "e-mail headers (From/Subject)")
    greeting = _GREETING.search(text)
    if greeting:
        evidence.add("support_email", _WEIGHT_GREETING, f"greeting '{greeting['greeting']}'")
    evidence.add("other", _OTHER_BASELINE, "baseline for documents of no specific type")

    if topical["support_email"] >= _SUPPORT_CONTENT_THRESHOLD and (header is None or header[0] != "invoice"):
        evidence.penalise("invoice", _PENALTY_INVOICE_IN_REQUEST, "an invoice is referenced in a request, not issued")
    if header is not None:
        evidence.penalise("support_email", _PENALTY_DOCUMENT_NOT_MESSAGE, "a formal document heading, not a message")
    if topical["hr_request"] >= _HR_CONTENT_THRESHOLD:
        evidence.penalise("support_email", _PENALTY_HR_TOPIC, "the request is about employment, not customer support")
    return evidence
