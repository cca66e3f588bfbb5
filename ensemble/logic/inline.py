"""Sizes of the values a run sends inline, when it has no payload store (docs/operations.md).

Pure and deterministic: the workflow measures a step's input, a compensation's, a subtask's and
its outcome with these before sending them, so that Temporal never refuses them (which would fail
every workflow task, or terminate the run) and the run fails, or waits, with its reason instead.
"""

from __future__ import annotations

import json
from typing import Any

from ensemble.spec import protocol


def inline_size(value: Any) -> int:
    """The bytes of JSON `value` takes in a payload, as the data converter writes it (compact, UTF-8)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode(errors="replace"))


def oversize_reason(what: str, size: int, limit: int, fix: str) -> str:
    """Why a value is not sent, and what to do about it."""
    return (
        f"{what} is {size / 2**20:.2f} MiB of JSON, over the {limit / 2**20:.2f} MiB a run without a payload "
        f"store can send through Temporal; configure a payload store (ENSEMBLE_PAYLOAD_STORE, or the S3 driver: "
        f"docs/operations.md) or {fix}"
    )


class InlineBudget:
    """The bytes of agent inputs a run has in flight (scheduled, not ended). Every command of one
    workflow task travels in one gRPC message: what is in flight at once stays under
    `protocol.INLINE_TASK_LIMIT`, except for one input alone."""

    def __init__(self, limit: int = protocol.INLINE_TASK_LIMIT) -> None:
        self.limit = limit
        self.in_flight = 0

    def admits(self, size: int) -> bool:
        return self.in_flight == 0 or self.in_flight + size <= self.limit
