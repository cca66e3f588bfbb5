"""Failure classification: what Temporal should retry and what it must not.

Transient failures (timeouts, connection errors, 429, 5xx) are retryable and honour a server's
Retry-After. Validation, permission and contract failures are non-retryable, with a message a
person can act on. Messages never include credentials: every message leaving an activity passes
`scrub` (activities/scrub.py), and `run_agent` scrubs whatever an executor raises once more.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime

from temporalio.exceptions import ApplicationError

from ensemble.activities.scrub import scrub as _scrub


def transient(message: str, *, kind: str = "TransientError", retry_after_s: float | None = None) -> ApplicationError:
    return ApplicationError(
        message,
        type=kind,
        next_retry_delay=timedelta(seconds=retry_after_s) if retry_after_s is not None else None,
    )


def permanent(message: str, *, kind: str = "PermanentError") -> ApplicationError:
    return ApplicationError(message, type=kind, non_retryable=True)


def parse_retry_after(value: str | None, *, cap_s: float = 600.0) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return max(0.0, min(seconds, cap_s))


def classify_status(status: int, *, who: str, detail: str = "", retry_after: str | None = None) -> ApplicationError:
    """Map an HTTP status from an agent's service to a retryable or non-retryable failure."""
    suffix = f": {detail}" if detail else ""
    if status == 429:
        return transient(
            f"{who} is rate limited (HTTP 429){suffix}",
            kind="RateLimited",
            retry_after_s=parse_retry_after(retry_after),
        )
    if status >= 500 or status in (408, 425):
        return transient(
            f"{who} failed with HTTP {status}{suffix}",
            kind="ServiceUnavailable",
            retry_after_s=parse_retry_after(retry_after),
        )
    if status in (401, 403):
        return permanent(
            f"{who} refused the credentials (HTTP {status}); check the worker's environment{suffix}",
            kind="PermissionDenied",
        )
    return permanent(f"{who} rejected the request (HTTP {status}){suffix}", kind="BadRequest")


def retry_after_of(headers: Mapping[str, str]) -> str | None:
    """The Retry-After of a reply as seconds text, also from the `retry-after-ms` header some
    model providers send."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return str(float(ms) / 1000)
        except ValueError:
            pass
    return headers.get("retry-after")


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` through the one redaction step (activities/scrub.py), `secrets` counted as well."""
    return _scrub(text, secrets)
