"""Reading a contract: splitting it into numbered clauses, and the text helpers the rater uses.

A clause starts at a heading line: "4. LIMITATION OF LIABILITY", "4.2 Fees", "Section 4 - Fees",
"Clause 7 – Confidentiality", "Article IV" (title on the next line), "ARTICLE 5: PAYMENT",
"§ 3 Fees", or an inline heading ("4. Limitation of Liability. The Supplier's..."). A numbered
line only counts as a heading when what follows the number reads like a title (short, no verbs
such as "shall" or "means"), so numbered paragraphs ("4.1 The Customer shall pay...") stay in
their clause. The helpers at the end normalise a clause, split it into sentences, read
durations ("ninety (90) days") and notice periods, and find who may do what ("Supplier may
terminate"). Pure functions: no I/O, clock or randomness.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ensemble.examples.contract_review.models import Clause

_KEYWORD_HEADING = re.compile(
    r"^\s*(?:#+\s*)?(?:section|clause|article|§)\s*"
    r"(?P<num>\d{1,3}(?:\.\d{1,3})*|(?-i:[IVXLC]+))\b(?P<punct>[.)]?)\s*(?:[-–—:.]\s*)?(?P<rest>.*)$",
    re.I,
)
_NUMBER_HEADING = re.compile(
    r"^\s*(?:#+\s*)?(?P<num>\d{1,3}(?:\.\d{1,3})*|(?-i:[IVXLC]+))(?P<punct>[.)]?)(?P<dash>\s*[-–—:])?"
    r"(?:\s+(?P<rest>\S.*))?\s*$"
)
_INLINE_TITLE = re.compile(r"^(?P<title>[^.:;–—]{2,80}?)(?:\.|:|\s[-–—])\s+(?P<body>\S.*)$")
_BODY_WORDS = re.compile(
    r"\b(?:shall|will|may|must|means|mean|is|are|was|were|be|been|has|have|had|agrees?|includes?|does|do"
    r"|not|can|cannot|should|would|hereby|herein)\b",
    re.I,
)
_END_OF_CLAUSES = re.compile(
    r"^\s*(?:IN\s+WITNESS\s+WHEREOF|SIGNED\b|Signed\s+(?:by|for|on\s+behalf)|SIGNATURES?\b|Signatures?:"
    r"|AGREED\s+AND\s+ACCEPTED|(?:SCHEDULE|EXHIBIT|ANNEX|APPENDIX)\s+[\w.]+\s*(?:$|[-–—:]))",
)
_SENTENCE_END = re.compile(r"[.:;!?]\s")
_BLANK_LINE = re.compile(r"\n\s*\n")
_ROMAN_VALUES = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100}


@dataclass
class _Heading:
    line: int
    number: str
    title: str
    depth: int
    order: tuple[int, ...]
    titled: bool
    first_body: str = ""
    skip_next: bool = False


@dataclass
class _Section:
    heading: _Heading
    body: list[str] = field(default_factory=list)


def _roman(value: str) -> int:
    total = 0
    for symbol, following in zip(value, value[1:] + " "):
        number = _ROMAN_VALUES[symbol]
        total += -number if following != " " and _ROMAN_VALUES[following] > number else number
    return total


def _order(number: str) -> tuple[int, ...]:
    if number[0].isdigit():
        return tuple(int(part) for part in number.split("."))
    return (_roman(number),)


def title_like(text: str) -> bool:
    """A heading title: short, starts with a capital, one phrase, no verbs of an operative sentence."""
    text = text.strip().rstrip(".:").strip()
    if not text or len(text) > 80 or len(text.split()) > 10:
        return False
    if not text[0].isupper() or text[-1] in ",;":
        return False
    return not _SENTENCE_END.search(text) and not _BODY_WORDS.search(text)


def _split_rest(rest: str) -> tuple[str, str, bool]:
    """(title, body on the heading line, titled) for the text after a clause number."""
    rest = rest.strip()
    if title_like(rest):
        return rest.rstrip(".:").strip(), "", True
    inline = _INLINE_TITLE.match(rest)
    if inline and title_like(inline["title"]):
        return inline["title"].strip(), inline["body"].strip(), True
    return "", rest, False


def _next_nonblank(lines: list[str], index: int) -> str:
    for line in lines[index + 1 : index + 3]:
        if line.strip():
            return line.strip()
    return ""


def _heading(lines: list[str], index: int) -> _Heading | None:
    line = lines[index]
    keyword = _KEYWORD_HEADING.match(line)
    match = keyword or _NUMBER_HEADING.match(line)
    if not match:
        return None
    number, rest = match["num"], (match["rest"] or "").strip()
    if not keyword and "." not in number and not match["punct"] and not match.group("dash"):
        if not (rest.isupper() and title_like(rest)):
            return None  # "12 months ..." on a wrapped line is not a heading; "12 NOTICES" is
    if not keyword and not number[0].isdigit() and not match["punct"]:
        return None  # roman numerals need their dot: "IV. TERM"
    depth = number.count(".") + 1
    heading = _Heading(line=index, number=number, title="", depth=depth, order=_order(number), titled=False)
    if rest:
        heading.title, heading.first_body, heading.titled = _split_rest(rest)
        if keyword and not heading.titled:
            if rest[0].islower():
                return None  # "Section 4 of this Agreement survives..." is a reference, not a heading
            heading.title, heading.titled = f"{line.strip().split()[0].title()} {number}", True
        return heading
    following = _next_nonblank(lines, index)
    if following and title_like(following) and not _NUMBER_HEADING.match(following):
        heading.title, heading.titled, heading.skip_next = following.rstrip(".:").strip(), True, True
    elif keyword:
        heading.title, heading.titled = f"{line.strip().split()[0].title()} {number}", True
    return heading


def _first_words(text: str, limit: int = 6) -> str:
    words = " ".join(text.split()).split()
    title = " ".join(words[:limit]).rstrip(".,;:")
    return title + ("…" if len(words) > limit else "")


def _sections(lines: list[str], headings: list[_Heading]) -> list[_Section]:
    """Clauses in order: numbers must increase (a restart is a list inside a clause), unless every
    clause so far is empty (a table of contents), which is then discarded."""
    by_line = {heading.line: heading for heading in headings}
    sections: list[_Section] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        heading = by_line.get(index)
        if sections and _END_OF_CLAUSES.match(line):
            break
        if heading and sections and heading.order <= sections[-1].heading.order:
            if all(not "".join(section.body).strip() for section in sections):
                sections = []
            else:
                heading = None
        if heading:
            section = _Section(heading)
            if heading.first_body:
                section.body.append(heading.first_body)
            sections.append(section)
            index += 2 if heading.skip_next else 1
            continue
        if sections:
            sections[-1].body.append(line)
        index += 1
    return sections


def _paragraphs(text: str) -> list[Clause]:
    blocks = [block.strip() for block in _BLANK_LINE.split(text) if block.strip()]
    return [
        Clause(number=str(number), title=_first_words(block), text=block)
        for number, block in enumerate(blocks, start=1)
    ]


def split_clauses(text: str) -> list[Clause]:
    """The contract's clauses in order. The preamble (parties, recitals) and anything from the
    signature block or the first schedule on are left out. A contract without titled headings
    is split on its top-level numbers (titles are then the first words of each clause), and one
    without any numbering is split into paragraphs."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    candidates = [heading for index in range(len(lines)) if (heading := _heading(lines, index))]
    titled = [heading for heading in candidates if heading.titled]
    if titled:
        level = min(heading.depth for heading in titled)
        chosen = [heading for heading in titled if heading.depth == level]
    else:
        chosen = [heading for heading in candidates if heading.depth == 1]
    sections = _sections(lines, chosen)
    if not sections:
        return _paragraphs(text)
    clauses = []
    for section in sections:
        body = "\n".join(section.body).strip()
        title = section.heading.title or _first_words(body)
        clauses.append(Clause(number=section.heading.number, title=title, text=body))
    return clauses


# --- reading clause text ------------------------------------------------------------------------------

_INCLUDING = re.compile(r"\b(includ(?:ing|es?))\s*,?\s*(?:but\s+not\s+limited\s+to|without\s+limitation)\s*,?", re.I)
_SENTENCE_BREAK = re.compile(r"(?<=[.;!?])\s+(?=[\"“(A-Z0-9])")
_NUMBER_WORDS = {
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "fourteen": 14,
    "fifteen": 15,
    "eighteen": 18,
    "twenty": 20,
    "twenty-one": 21,
    "twenty-four": 24,
    "thirty": 30,
    "thirty-six": 36,
    "forty-five": 45,
    "sixty": 60,
    "ninety": 90,
}
_QUANTITY = re.compile(
    r"(?:\((?P<paren>\d{1,4})\)|\b(?P<digits>\d{1,4})|\b(?P<word>"
    + "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True))
    + r"))[\s-]*(?:calendar\s+|business\s+|working\s+)?(?P<unit>day|month|year)s?\b",
    re.I,
)
_UNIT_DAYS = {"day": 1, "month": 30, "year": 365}
_MUTUAL = re.compile(r"\b(?:either|each|both|any)\s+part(?:y|ies)\b|\bthe\s+parties\b|\bmutual(?:ly)?\b", re.I)
_MODAL = (
    r"(?P<modal>may|shall|will|can|cannot|must|agrees\s+to|undertakes\s+to|reserves\s+the\s+right\s+to"
    r"|is\s+entitled\s+to|has\s+the\s+right\s+to|is\s+free\s+to)(?P<neg>\s+not\b)?"
)
_PARTY = r"(?-i:[A-Z][A-Za-z]+)|(?:either|each|both|any)\s+part(?:y|ies)"
_PASSIVE_GAP = re.compile(r"\bbe(?:en)?\s*$", re.I)
_NOT_PARTIES = frozenset(
    "This That Agreement Either Each Neither Both Any No Nothing Such It The Notice Notices Party Parties "
    "Services Service Fees Fee Schedule Clause Section Article Personal Data Confidential Information All "
    "These Its Which Price Prices Charges Rates Invoice Invoices Payment Term Renewal Termination Licence "
    "License Deliverables Order Orders If Where When Upon".split()
)


def normalize(text: str) -> str:
    """One line of text, with "including without limitation" (a list, not a liability term) reduced."""
    return _INCLUDING.sub(r"\1", " ".join(text.split()))


def sentences(text: str) -> list[str]:
    return [part for part in _SENTENCE_BREAK.split(text) if part.strip()]


def quantities_in_days(text: str) -> list[int]:
    """Every duration in the text, in days ("ninety (90) days" -> 90, "three (3) months" -> 90)."""
    found = []
    for match in _QUANTITY.finditer(text):
        raw = match["paren"] or match["digits"]
        value = int(raw) if raw else _NUMBER_WORDS[match["word"].lower()]
        found.append(value * _UNIT_DAYS[match["unit"].lower()])
    return found


_NOTICE_AFTER = re.compile(r"^\W{0,2}\s*(?:prior\s+|advance\s+)?(?:written\s+)?notice\b", re.I)
_NOTICE_WORD = re.compile(r"\bnotice\b", re.I)


def period(days: int) -> str:
    """A duration in days as a contract would say it: 90 -> "90 days", 360 -> "12 months", 730 -> "2 years"."""
    if days >= 365 and days % 365 == 0:
        return f"{days // 365} year{'s' if days > 365 else ''}"
    if days >= 360 and days % 30 == 0:
        return f"{days // 30} months"
    return f"{days} day{'s' if days != 1 else ''}"


def notice_days(sentence: str) -> list[int]:
    """Notice periods in days: "ninety (90) days' notice", "notice ... at least 90 days before"."""
    found = []
    for match in _QUANTITY.finditer(sentence):
        before = sentence[max(0, match.start() - 80) : match.start()]
        if _NOTICE_AFTER.match(sentence[match.end() :]) or _NOTICE_WORD.search(before):
            raw = match["paren"] or match["digits"]
            value = int(raw) if raw else _NUMBER_WORDS[match["word"].lower()]
            found.append(value * _UNIT_DAYS[match["unit"].lower()])
    return found


def actors_pattern(verb: str) -> re.Pattern[str]:
    gap = r"(?:(?!\b(?:may|shall|will|must|can|cannot)\b)[^.;]){0,80}?"
    return re.compile(rf"\b(?:the\s+)?(?P<who>{_PARTY})(?:['’]s)?\s+{_MODAL}(?P<gap>{gap})\b(?:{verb})", re.I)


def passive_pattern(participle: str) -> re.Pattern[str]:
    return re.compile(rf"\b(?:{participle})\s+by\s+(?:the\s+)?(?P<who>{_PARTY})", re.I)


def actors(sentence: str, active: re.Pattern[str], passive: re.Pattern[str]) -> list[tuple[str, bool]]:
    """Who does the verb in a sentence, and whether they are told not to: [("Supplier", False)].
    "Either party" and the like come back as "mutual"."""
    found: list[tuple[str, bool]] = []
    for match in active.finditer(sentence):
        if _PASSIVE_GAP.search(match["gap"]):
            continue  # "X shall be indemnified": X is on the receiving end
        negated = bool(match["neg"]) or match["modal"].lower() == "cannot"
        found.append((match["who"], negated))
    found.extend((match["who"], False) for match in passive.finditer(sentence))
    result = []
    for who, negated in found:
        if _MUTUAL.fullmatch(who):
            result.append(("mutual", negated))
        elif who not in _NOT_PARTIES:
            result.append((who, negated))
    return result


_SUB_NUMBER = re.compile(r"^\(?\d+(?:\.\d+)*\)?\s+")


def quote(sentence: str, limit: int = 140) -> str:
    sentence = _SUB_NUMBER.sub("", sentence)
    return sentence if len(sentence) <= limit else sentence[: limit - 1].rstrip() + "…"
