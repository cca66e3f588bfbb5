"""The document_pipeline agents, called directly: the bundled samples and documents they have never seen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from ensemble.examples.document_pipeline.agents import classifier, extractor, router
from ensemble.examples.document_pipeline.models import (
    LABELS,
    Classification,
    ClassifierInput,
    DocumentInput,
    Extraction,
    Money,
    RouterInput,
    Routing,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "document_pipeline"
DOCUMENTS = EXAMPLE / "documents"


def run_pipeline(text: str) -> tuple[Extraction, Classification, Routing]:
    fields = extractor(DocumentInput(text=text))
    classification = classifier(ClassifierInput(text=text, fields=fields))
    routing = router(RouterInput(classification=classification, fields=fields, text=text))
    return fields, classification, routing


def sample(name: str) -> str:
    return (DOCUMENTS / name).read_text(encoding="utf-8")


def extract(text: str) -> Extraction:
    return extractor(DocumentInput(text=text))


# --- the bundled samples -----------------------------------------------------------------------

SAMPLES = [
    # file, label, queue, priority, requires_approval
    ("invoice.txt", "invoice", "accounts-payable", "normal", True),
    ("invoice_eu.txt", "invoice", "accounts-payable", "normal", False),
    ("support_email.txt", "support_email", "customer-support", "urgent", False),
    ("support_email_billing.txt", "support_email", "customer-support", "normal", False),
    ("contract.txt", "contract", "legal", "normal", True),
    ("purchase_order.txt", "purchase_order", "procurement", "normal", True),
    ("hr_request.txt", "hr_request", "people-ops", "normal", False),
    ("hr_onboarding.txt", "hr_request", "people-ops", "normal", False),
    ("memo.txt", "other", "triage", "low", False),
]


def test_every_sample_document_has_an_expectation() -> None:
    assert sorted(path.name for path in DOCUMENTS.glob("*.txt")) == sorted(name for name, *_ in SAMPLES)


@pytest.mark.parametrize("name", [name for name, *_ in SAMPLES])
def test_sample_documents_have_a_realistic_length(name: str) -> None:
    assert 15 <= len(sample(name).splitlines()) <= 60


@pytest.mark.parametrize(("name", "label", "queue", "priority", "requires_approval"), SAMPLES)
def test_sample_is_classified_and_routed(
    name: str, label: str, queue: str, priority: str, requires_approval: bool
) -> None:
    _, classification, routing = run_pipeline(sample(name))
    assert classification.label == label
    assert classification.confidence >= 0.9
    assert max(classification.scores, key=classification.scores.__getitem__) == label
    assert (routing.queue, routing.priority, routing.requires_approval) == (queue, priority, requires_approval)


def test_input_json_is_the_invoice_sample() -> None:
    payload = json.loads((EXAMPLE / "input.json").read_text(encoding="utf-8"))
    assert payload == {"text": sample("invoice.txt"), "filename": "invoice.txt"}
    assert DocumentInput.model_validate(payload).filename == "invoice.txt"


def test_invoice_fields() -> None:
    fields = extract(sample("invoice.txt"))
    assert fields.title == "Northwind Logistics, Inc."
    assert fields.invoice_number == "INV-2041"
    assert fields.po_number == "PO-7782"
    assert fields.total == Money(value=13101.38, currency="USD")
    assert fields.dates == ["2026-03-14", "2026-04-13"]
    assert fields.emails == ["billing@northwind-logistics.example"]
    assert fields.phones == ["+1 (206) 555-0147"]
    assert fields.reference_numbers == ["CUST-0091"]
    assert fields.amounts[:2] == [Money(value=850.0, currency="USD"), Money(value=10200.0, currency="USD")]
    assert len(fields.amounts) == 8
    assert fields.contract_parties == []
    assert fields.sender is None and fields.subject is None


def test_european_invoice_fields() -> None:
    fields = extract(sample("invoice_eu.txt"))
    assert fields.invoice_number == "2026/0318"
    assert fields.po_number == "PO-NW-5521"
    assert fields.total == Money(value=6370.65, currency="EUR")
    assert fields.dates == ["2026-03-18", "2026-03-11", "2026-04-17"]
    assert Money(value=0.84, currency="EUR") in fields.amounts
    assert Money(value=4200.0, currency="EUR") in fields.amounts
    assert Money(value=1105.65, currency="EUR") in fields.amounts
    assert fields.phones == ["+31 10 555 0192"]


def test_contract_fields() -> None:
    fields = extract(sample("contract.txt"))
    assert fields.title == "MASTER SERVICES AGREEMENT"
    assert fields.contract_parties == ["Acme Corp", "Northwind Logistics, Inc."]
    assert fields.dates == ["2026-04-01"]
    assert fields.amounts == [] and fields.total is None


def test_support_email_fields() -> None:
    fields = extract(sample("support_email.txt"))
    assert fields.sender == "Dana Whitfield <dana.whitfield@brightpath-retail.example>"
    assert fields.subject == "URGENT: Checkout down for all customers since 6am"
    assert fields.title == fields.subject
    assert fields.dates == ["2026-03-17"]
    assert fields.phones == ["+44 20 7946 0321"]
    assert fields.reference_numbers == ["BP-30219", "TCK-88213"]
    assert fields.emails == ["dana.whitfield@brightpath-retail.example", "support@cloudcart.example"]


def test_billing_support_email_is_not_an_invoice() -> None:
    fields, classification, routing = run_pipeline(sample("support_email_billing.txt"))
    assert fields.sender == "Marcus Okafor <m.okafor@acme-corp.example>"
    assert fields.subject == "Charged twice for invoice INV-2041 - please help"
    assert fields.invoice_number == "INV-2041"
    assert fields.dates == ["2026-04-02", "2026-03-14", "2026-03-30", "2026-03-31"]
    assert classification.label == "support_email"
    assert (classification.scores["support_email"], classification.scores["invoice"]) == (14.0, 3.0)
    assert "against invoice: an invoice is referenced in a request, not issued" in classification.signals
    assert routing.requires_approval is False


def test_purchase_order_fields() -> None:
    fields = extract(sample("purchase_order.txt"))
    assert fields.po_number == "PO-2026-0417"
    assert fields.invoice_number is None
    assert fields.total == Money(value=19487.5, currency="USD")
    assert fields.dates == ["2026-03-20", "2026-04-03"]
    assert fields.phones == ["(415) 555-0188"]
    assert fields.contract_parties == []


def test_hr_fields() -> None:
    leave = extract(sample("hr_request.txt"))
    assert leave.employee == "Priya Raman"
    assert leave.sender == "Priya Raman <priya.raman@acme-corp.example>"
    assert leave.dates == ["2026-05-15", "2026-05-04", "2026-05-18"]
    assert leave.reference_numbers == ["E-10442"]
    onboarding = extract(sample("hr_onboarding.txt"))
    assert onboarding.employee == "Samuel Osei"
    assert onboarding.dates == ["2026-03-16", "2026-04-06", "2026-04-07"]


def test_memo_fields() -> None:
    fields = extract(sample("memo.txt"))
    assert fields.sender == "Facilities Team"
    assert fields.subject == "Parking garage resurfacing and temporary parking"
    assert fields.dates[:2] == ["2026-03-09", "2026-03-23"]


def test_signals_explain_the_label() -> None:
    _, classification, _ = run_pipeline(sample("invoice.txt"))
    assert "header 'INVOICE'" in classification.signals
    assert "has invoice number INV-2041" in classification.signals
    assert "has total 13,101.38 USD" in classification.signals
    assert set(classification.scores) == set(LABELS)
    assert classification.confidence == 0.99


def test_ties_are_broken_by_the_fixed_label_order() -> None:
    fields = Extraction(invoice_number="A-100", po_number="PO-100")
    classification = classifier(ClassifierInput(text="see attached", fields=fields))
    assert classification.scores["invoice"] == classification.scores["purchase_order"] == 3.0
    assert classification.label == "invoice"


def test_employment_topic_outweighs_the_email_medium() -> None:
    _, classification, _ = run_pipeline(UNSEEN["payroll question"][1])
    assert classification.label == "hr_request"
    assert "against support_email: the request is about employment, not customer support" in classification.signals
    assert classification.scores["support_email"] == 1.5


def test_a_formal_heading_is_not_a_support_message() -> None:
    text = "INVOICE\nInvoice number: 5512\nTotal due: $120.00\nFor help with this invoice, contact our support team."
    _, classification, _ = run_pipeline(text)
    assert classification.label == "invoice"
    assert "against support_email: a formal document heading, not a message" in classification.signals
    assert classification.scores["support_email"] == 0.5


# --- field extraction on inline text -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("due 2026-03-14", "2026-03-14"),
        ("due 14/03/2026", "2026-03-14"),
        ("due 14.03.2026", "2026-03-14"),
        ("due March 14, 2026", "2026-03-14"),
        ("due 14 March 2026", "2026-03-14"),
        ("due 14th of Mar 2026", "2026-03-14"),
        ("due Sept. 9, 2026", "2026-09-09"),
        ("due 9-Oct-2026", "2026-10-09"),
    ],
)
def test_date_formats(text: str, expected: str) -> None:
    assert extract(text).dates == [expected]


def test_dates_are_deduplicated_and_invalid_ones_dropped() -> None:
    assert extract("14 March 2026, then 2026-03-14, not 31/02/2026, then 1 May 2026").dates == [
        "2026-03-14",
        "2026-05-01",
    ]


def test_ambiguous_numeric_dates_follow_the_documents_convention() -> None:
    assert extract("ordered 03/20/2026, delivered 04/03/2026").dates == ["2026-03-20", "2026-04-03"]
    assert extract("delivered 04/03/2026").dates == ["2026-03-04"]


def test_money_notations() -> None:
    fields = extract("Fees: $1,234.56, €1.234,56, £99, USD 2,500, 12.100,00 €, CHF 12.50 and US$5.")
    assert [(money.value, money.currency) for money in fields.amounts] == [
        (1234.56, "USD"),
        (1234.56, "EUR"),
        (99.0, "GBP"),
        (2500.0, "USD"),
        (12100.0, "EUR"),
        (12.5, "CHF"),
        (5.0, "USD"),
    ]


def test_total_prefers_amount_due_over_total_and_ignores_subtotal() -> None:
    text = "Subtotal: $900.00\nTotal (excl. tax): $900.00\nShipping: $5,000.00\nBalance due: $990.00\n"
    assert extract(text).total == Money(value=990.0, currency="USD")
    assert extract("Grand total\n$4,400.00\nDeposit $9,999.00").total == Money(value=4400.0, currency="USD")
    assert extract("Paid $20 then $75.50").total == Money(value=75.5, currency="USD")


def test_phone_numbers_need_a_phone_shape_or_label() -> None:
    text = (
        "Mobile 07700 900123\nFax: +49 (0)30 1234567\nAccount number 0042-7781-93\n"
        "IBAN NL91 ABNA 0417 1643 00\nDated 14.03.2026"
    )
    assert extract(text).phones == ["07700 900123", "+49 (0)30 1234567"]


def test_identifiers() -> None:
    fields = extract("Invoice No: A-77/2026\nP.O. Box 4410\nYour PO: 7781\nTicket #55213, case 18, order 2026-01-02")
    assert fields.invoice_number == "A-77/2026"
    assert fields.po_number == "7781"
    assert fields.reference_numbers == ["55213"]


def test_contract_parties_are_trimmed_and_times_are_not_parties() -> None:
    numbered = (
        "between (1) Bluefin Analytics Ltd., a company registered in England;"
        ' and (2) Harbor Robotics LLC ("Recipient").'
    )
    assert extract(numbered).contract_parties == ["Bluefin Analytics Ltd.", "Harbor Robotics LLC"]
    sentence_end = "under the agreement between Acme Corp and Northwind Logistics, Inc.\nScope: warehousing."
    assert extract(sentence_end).contract_parties == ["Acme Corp", "Northwind Logistics, Inc."]
    no_suffix = "made between Bluefin Analytics Ltd and Harbor Robotics LLC.\nEach party agrees to keep it secret."
    assert extract(no_suffix).contract_parties == ["Bluefin Analytics Ltd", "Harbor Robotics LLC"]
    not_parties = "Deliveries between 8:00 and 16:00, between Monday and Friday, between us and them."
    assert extract(not_parties).contract_parties == []


def test_signature_gives_the_sender_without_a_from_header() -> None:
    letter = "Dear Sir,\nPlease see attached.\n\nBest regards,\nJohn Q. Public-Smith\n"
    assert extract(letter).sender == "John Q. Public-Smith"


# --- documents the agents have never seen ------------------------------------------------------

UNSEEN = {
    "freelancer invoice": (
        "invoice",
        """Invoice #0087
From: Jamie Lee Design
To: Harbor Cafe Ltd

Logo refresh and menu layout - 12 hrs @ £45/hr: £540.00
Total due: £540.00 by 30 April 2026
Pay to: sort code 40-11-62, account 31926819""",
    ),
    "invoice without a heading": (
        "invoice",
        """Bright Studio LLC
Bill to: Harbor Robotics LLC
Invoice date 2026-02-28, invoice no. BS-1142
Website maintenance, February: USD 1,800
Balance due: USD 1,800 within 14 days.""",
    ),
    "purchase order e-mail": (
        "purchase_order",
        """Hi Dave,

Please supply 500 units of the M8 hex bolts (part no. HB-M8-40) at the quoted $0.12 per unit,
plus 200 matching washers, and deliver to our Leeds warehouse by 12 June 2026. Our purchase
order number is 45001872; please quote it on your invoice.

Thanks,
Rachel
Procurement, Acme Corp""",
    ),
    "resignation letter": (
        "hr_request",
        """Dear Ms. Carter,

Please accept this letter as formal notice of my resignation from my position as Senior Analyst
at Acme Corp. In line with my four-week notice period, my last working day will be 29 May 2026.

Sincerely,
Jordan Pike""",
    ),
    "payroll question": (
        "hr_request",
        """Subject: March payslip missing overtime
From: Lee Navarro <lee.navarro@acme-corp.example>

Hi,
my March payslip is missing the 12 hours of overtime I worked during the stock count.
Could you check and correct it in the next payroll run?
Thanks, Lee""",
    ),
    "NDA": (
        "contract",
        """MUTUAL NON-DISCLOSURE AGREEMENT

This Agreement is made on 3 February 2026 between Bluefin Analytics Ltd and Harbor Robotics LLC.
Each party agrees to keep the other party's Confidential Information secret and to use it only
to evaluate a possible collaboration. This Agreement is governed by the laws of England.""",
    ),
    "password reset request": (
        "support_email",
        """hey, I can’t log in to my account anymore. I tried the password reset link three
times but the email never arrives. can you help? my username is k.m.ross""",
    ),
    "refund letter": (
        "support_email",
        """To whom it may concern,
I was charged $49.99 for a subscription renewal I had cancelled on 2 January 2026.
Please refund the charge to my card ending 4421. My customer number is 88-1209-44.
Regards, A. Novak""",
    ),
    "lunch menu": (
        "other",
        """Friday Lunch Menu

Tomato and basil soup - $4.50
Grilled chicken wrap with slaw - $8.50
Dessert: apple crumble
Orders close at 11am.""",
    ),
    "meeting minutes": (
        "other",
        """Team meeting minutes - 12 March 2026
Attendees: Ana, Bo, Chen
1. Q2 roadmap reviewed, no changes.
2. Next meeting 26 March 2026.""",
    ),
}


@pytest.mark.parametrize("name", list(UNSEEN))
def test_unseen_document_is_classified(name: str) -> None:
    label, text = UNSEEN[name]
    _, classification, routing = run_pipeline(text)
    assert classification.label == label, classification.signals
    assert classification.confidence >= 0.5
    assert routing.queue != "triage" or label == "other"


def test_unseen_fields() -> None:
    freelancer = extract(UNSEEN["freelancer invoice"][1])
    assert (freelancer.invoice_number, freelancer.total) == ("0087", Money(value=540.0, currency="GBP"))
    assert freelancer.dates == ["2026-04-30"]
    assert extract(UNSEEN["purchase order e-mail"][1]).po_number == "45001872"
    assert extract(UNSEEN["NDA"][1]).contract_parties == ["Bluefin Analytics Ltd", "Harbor Robotics LLC"]
    assert extract(UNSEEN["resignation letter"][1]).sender == "Jordan Pike"


def test_overdue_invoice_reminder_is_urgent_for_accounts_payable() -> None:
    text = """Subject: Payment reminder - invoice INV-3310 now past due
From: accounts@brightline-print.example

Dear customer,
Our records show that invoice INV-3310 for $2,400.00 is now 15 days past due.
Please arrange payment immediately by bank transfer."""
    _, classification, routing = run_pipeline(text)
    assert classification.label == "invoice"
    assert (routing.queue, routing.priority, routing.requires_approval) == ("accounts-payable", "urgent", False)
    assert "urgency: 'immediately'" in routing.reasons
    assert "overdue: 'past due'" in routing.reasons


@pytest.mark.parametrize("text", ["ok", "   \n\n  thanks  \n"])
def test_empty_ish_document_goes_to_triage_with_low_confidence(text: str) -> None:
    _, classification, routing = run_pipeline(text)
    assert classification.label == "other"
    assert classification.confidence < 0.5
    assert (routing.queue, routing.priority, routing.requires_approval) == ("triage", "low", False)
    assert routing.reasons[1] == "confidence below 0.50: a person should confirm the document type"


def test_empty_text_is_rejected() -> None:
    with pytest.raises(ValidationError):
        DocumentInput(text="")


def test_pipeline_is_deterministic() -> None:
    for name, *_ in SAMPLES:
        text = sample(name)
        first = [model.model_dump() for model in run_pipeline(text)]
        second = [model.model_dump() for model in run_pipeline(text)]
        assert first == second, name


# --- the router on its own ---------------------------------------------------------------------


def routed(
    label: str, confidence: float, text: str = "", total: Money | None = None, subject: str | None = None
) -> Routing:
    classification = Classification(label=label, confidence=confidence, scores={name: 0.0 for name in LABELS})
    fields = Extraction(total=total, subject=subject, title=subject)
    return router(RouterInput(classification=classification, fields=fields, text=text))


def test_low_confidence_sends_any_label_to_triage() -> None:
    routing = routed("invoice", 0.49)
    assert routing.queue == "triage"
    assert routing.reasons == [
        "classified as invoice (confidence 0.49)",
        "confidence below 0.50: a person should confirm the document type",
    ]
    assert routed("invoice", 0.5).queue == "accounts-payable"


def test_approval_threshold_applies_in_any_currency() -> None:
    assert routed("invoice", 0.9, total=Money(value=9999.99, currency="USD")).requires_approval is False
    routing = routed("purchase_order", 0.9, total=Money(value=10000.0, currency="JPY"))
    assert routing.requires_approval is True
    assert routing.reasons[-1] == "total 10,000.00 JPY is at or above the 10,000 approval threshold"
    assert routed("support_email", 0.9, total=Money(value=50000.0, currency="EUR")).requires_approval is False


def test_contracts_always_need_approval_and_ignore_boilerplate_urgency() -> None:
    routing = routed("contract", 0.9, text="Either party may terminate this Agreement immediately on notice.")
    assert (routing.queue, routing.priority, routing.requires_approval) == ("legal", "normal", True)
    assert routed("contract", 0.9, text="...", subject="URGENT: sign today").priority == "high"


@pytest.mark.parametrize(
    ("text", "priority"),
    [
        ("Could you send me a copy of my receipt?", "normal"),
        ("Please reply asap.", "high"),
        ("The website is down.", "high"),
        ("Urgent: the website is down for everyone.", "urgent"),
        ("The payment for February is overdue.", "high"),
    ],
)
def test_priority_rises_with_each_kind_of_urgency(text: str, priority: str) -> None:
    assert routed("support_email", 0.9, text=text).priority == priority


def test_router_reads_the_subject_when_no_text_is_given() -> None:
    assert routed("support_email", 0.9, subject="Outage in EU region").priority == "high"
