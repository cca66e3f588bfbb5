"""The agents of the document_pipeline flow: extractor -> classifier -> router.

All three are offline and deterministic (pure functions of their input: no model, network,
randomness or clock), so a retried or replayed step always produces the same output.
"""

from __future__ import annotations

import math
import re

from ensemble.authoring.agents import agent
from ensemble.examples.document_pipeline.models import (
    Classification,
    ClassifierInput,
    DocumentInput,
    Extraction,
    Label,
    Priority,
    RouterInput,
    Routing,
)
from ensemble.examples.document_pipeline.rules import extract_fields, score_document

TIE_ORDER: tuple[Label, ...] = ("invoice", "purchase_order", "contract", "hr_request", "support_email", "other")
QUEUES: dict[Label, str] = {
    "invoice": "accounts-payable",
    "purchase_order": "procurement",
    "contract": "legal",
    "support_email": "customer-support",
    "hr_request": "people-ops",
    "other": "triage",
}
TRIAGE_QUEUE = "triage"
LOW_CONFIDENCE = 0.5
MAX_CONFIDENCE = 0.99
APPROVAL_THRESHOLD = 10_000.0
_TEMPERATURE = 2.0
_PRIORITIES: tuple[Priority, ...] = ("low", "normal", "high", "urgent")

_URGENCY: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (category, re.compile(pattern, re.I))
    for category, pattern in (
        (
            "urgency",
            r"\burgent(?:ly)?\b|\basap\b|\bas\s+soon\s+as\s+possible\b|\bimmediate(?:ly)?\b|\bemergency\b"
            r"|\bright\s+away\b",
        ),
        (
            "outage",
            r"\boutages?\b|\bdowntime\b|\bservice\s+unavailable\b"
            r"|\b(?:is|are|was|were|went|been|still|completely|totally|site|system|servers?|website|app)\s+down\b",
        ),
        ("overdue", r"\boverdue\b|\bpast\s+due\b|\bfinal\s+(?:notice|reminder|demand)\b"),
    )
)


@agent(
    name="extractor",
    description="Pulls dates, amounts, identifiers, parties and e-mail headers out of a plain-text document.",
    timeout_s=30,
)
def extractor(doc: DocumentInput) -> Extraction:
    """Pulls dates, amounts, identifiers, parties and e-mail headers out of a plain-text document.

    - dates: ISO `YYYY-MM-DD`, from 2026-03-14, 14/03/2026, 14.03.2026, March 14, 2026 or
      14 March 2026, in order of appearance. All-numeric dates are read day-first unless the
      document's other numeric dates are month-first (03/20/2026).
    - amounts: figures marked with $ € £ or USD/EUR/GBP/CAD/AUD/CHF/JPY, in 1,234.56 or 1.234,56
      notation; `total` is the largest amount on an "amount/balance due" line, else on a
      "total" line (not "subtotal"), else the largest amount in the document.
    - invoice and PO numbers, and other labelled identifiers (ticket, customer ID, reference...).
    - the parties of "between X and Y", the From/Subject (or memo RE) headers, a labelled
      employee or new hire, phone numbers (international, area-code or labelled), e-mail addresses.

    `title` is the subject when there is one, else the first line with words in it.
    """
    return extract_fields(doc.text)


@agent(
    name="classifier",
    description="Labels a document as invoice, support_email, contract, purchase_order, hr_request or other.",
    timeout_s=30,
)
def classifier(data: ClassifierInput) -> Classification:
    """Labels a document as invoice, support_email, contract, purchase_order, hr_request or other.

    Every label gets a score: weighted phrases (capped per phrase), a document-type heading among
    the first lines ("INVOICE", "Purchase Order", "... AGREEMENT", "MEMORANDUM"), extracted
    fields (an invoice or PO number, contract parties, a named employee, a total) and e-mail
    headers. Negative signals keep the topic ahead of the medium: an e-mail that only refers to
    an invoice in a complaint is support, an e-mail about leave or payroll is HR. `other` holds a
    fixed baseline, so a document needs real evidence to get any other label.

    The highest score wins; ties go to the first of invoice, purchase_order, contract,
    hr_request, support_email, other. `confidence` is the winner's softmax share of all scores
    (capped at 0.99: a heuristic is never certain), so it grows with the margin over the
    runners-up. `signals` lists the evidence for the winner and any penalties applied.
    """
    evidence = score_document(data.text, data.fields)
    scores = evidence.scores
    label = max(TIE_ORDER, key=lambda candidate: (scores[candidate], -TIE_ORDER.index(candidate)))
    spread = sum(math.exp((score - scores[label]) / _TEMPERATURE) for score in scores.values())
    return Classification(
        label=label,
        confidence=round(min(MAX_CONFIDENCE, 1 / spread), 3),
        scores={name: round(score, 2) for name, score in scores.items()},
        signals=evidence.signals[label] + evidence.penalties,
    )


def _urgency_cues(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for category, pattern in _URGENCY:
        phrases = list(dict.fromkeys(" ".join(m.group().lower().split()) for m in pattern.finditer(text)))
        if phrases:
            found[category] = phrases
    return found


def _raise(priority: Priority, floor: Priority) -> Priority:
    return max(priority, floor, key=_PRIORITIES.index)


@agent(
    name="router",
    description="Chooses the team queue, priority and approval need for a classified document.",
    timeout_s=30,
)
def router(data: RouterInput) -> Routing:
    """Chooses the team queue, priority and approval need for a classified document.

    Queues: invoice -> accounts-payable, purchase_order -> procurement, contract -> legal,
    support_email -> customer-support, hr_request -> people-ops, other -> triage. A confidence
    below 0.5 sends any document to triage for a person to confirm.

    Priority starts at normal (low for `other`) and rises to high with one kind of urgency cue
    and to urgent with two: urgency words (urgent, asap, immediately...), an outage (outage,
    "is down"...), or an overdue payment (overdue, past due, final notice). Contracts are
    checked on their title only, since legal boilerplate says "immediately" routinely.

    Approval is required for every contract and for an invoice or purchase order whose total is
    10,000 or more in any currency. `reasons` explains each decision.
    """
    classification, fields = data.classification, data.fields
    label = classification.label
    reasons = [f"classified as {label} (confidence {classification.confidence:.2f})"]

    if classification.confidence < LOW_CONFIDENCE:
        queue = TRIAGE_QUEUE
        reasons.append(f"confidence below {LOW_CONFIDENCE:.2f}: a person should confirm the document type")
    else:
        queue = QUEUES[label]
        reasons.append(f"{label} documents go to {queue}")

    headline = " ".join(part for part in (fields.subject, fields.title) if part)
    scanned = headline if label == "contract" or not data.text else data.text
    priority: Priority = "low" if label == "other" else "normal"
    cues = _urgency_cues(scanned)
    for category, phrases in cues.items():
        reasons.append(f"{category}: " + ", ".join(f"'{phrase}'" for phrase in phrases))
    if cues:
        priority = _raise(priority, "urgent" if len(cues) >= 2 else "high")

    requires_approval = False
    if label == "contract":
        requires_approval = True
        reasons.append("contracts always need legal approval")
    elif label in ("invoice", "purchase_order") and fields.total and fields.total.value >= APPROVAL_THRESHOLD:
        requires_approval = True
        reasons.append(
            f"total {fields.total.value:,.2f} {fields.total.currency} is at or above"
            f" the {APPROVAL_THRESHOLD:,.0f} approval threshold"
        )
    return Routing(queue=queue, priority=priority, requires_approval=requires_approval, reasons=reasons)
