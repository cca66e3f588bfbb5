"""Settings read from the environment that clients and workers share. Light on purpose: every CLI
command reads them, and the SDK's worker package loads only in processes that run a worker."""

from __future__ import annotations

import os

from ensemble.spec import DEFAULT_TASK_QUEUE
from ensemble.spec.errors import InputError


def default_task_queue() -> str:
    return os.environ.get("ENSEMBLE_TASK_QUEUE") or DEFAULT_TASK_QUEUE


def positive_setting(name: str, default: int, what: str) -> int:
    """The positive whole number the environment variable `name` holds, or `default` when unset;
    anything else is one line (InputError)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
        if value < 1:
            raise ValueError
    except ValueError:
        raise InputError(f"{name}={raw!r} is not a positive number of {what}") from None
    return value
