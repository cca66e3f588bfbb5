"""What every shared model builds on (kept apart so the spec modules can import it without a cycle)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

NAME_RE = r"^[A-Za-z][A-Za-z0-9_.-]*$"
Effect = Literal["read", "idempotent", "irreversible"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
