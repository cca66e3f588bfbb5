"""The data each document_pipeline agent takes and returns: extractor -> classifier -> router."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Label = Literal["invoice", "support_email", "contract", "purchase_order", "hr_request", "other"]
LABELS: tuple[Label, ...] = ("invoice", "support_email", "contract", "purchase_order", "hr_request", "other")
Priority = Literal["low", "normal", "high", "urgent"]


class DocumentInput(BaseModel):
    """A business document as plain text."""

    text: str = Field(min_length=1, description="the document as plain text")
    filename: str | None = Field(None, description="where the text came from, informational only")


class Money(BaseModel):
    """An amount of money as written in the document."""

    value: float
    currency: str = Field(description="ISO 4217 code, e.g. USD")


class Extraction(BaseModel):
    """Fields found in a document. Anything not found is left empty."""

    title: str | None = Field(None, description="the e-mail subject, else the first meaningful line")
    emails: list[str] = Field(default_factory=list)
    phones: list[str] = Field(default_factory=list)
    dates: list[str] = Field(default_factory=list, description="ISO YYYY-MM-DD, in order of appearance")
    amounts: list[Money] = Field(default_factory=list, description="distinct amounts, in order of appearance")
    total: Money | None = Field(None, description="the amount on a total/amount-due line, else the largest")
    invoice_number: str | None = None
    po_number: str | None = None
    contract_parties: list[str] = Field(default_factory=list)
    sender: str | None = Field(None, description="the From header, else the name under the sign-off")
    subject: str | None = Field(None, description="the Subject (or memo RE) header")
    employee: str | None = Field(None, description="a labelled employee or new-hire name")
    reference_numbers: list[str] = Field(default_factory=list, description="other labelled identifiers")
    word_count: int = Field(0, ge=0)


class ClassifierInput(BaseModel):
    text: str
    fields: Extraction


class Classification(BaseModel):
    label: Label
    confidence: float = Field(ge=0, le=1)
    scores: dict[str, float] = Field(description="the evidence score of every label")
    signals: list[str] = Field(default_factory=list, description="the evidence behind the chosen label")


class RouterInput(BaseModel):
    classification: Classification
    fields: Extraction
    text: str = ""


class Routing(BaseModel):
    queue: str
    priority: Priority
    requires_approval: bool = False
    reasons: list[str] = Field(default_factory=list)
