"""Process logging for the CLI and workers, through structlog.

JSON lines when stderr is not a terminal (production: a log shipper reads them), a readable
console rendering on a terminal; `ENSEMBLE_LOG_FORMAT=json|console` forces one. Records from the
standard library (Temporal's SDK, an agent's `logging` calls) go through the same pipeline, and
so do an agent's `structlog.get_logger()` calls: while an agent runs, every line carries the
run_id, flow, step, agent and attempt it belongs to (see telemetry.observe_agent).

No tracebacks unless ENSEMBLE_DEBUG is set: a failure becomes one `error` field. No secrets:
fields named like credentials are redacted, and every string value passes the same redaction step
as activity errors (ensemble.activities.scrub): the secret values the worker holds and common token
shapes, wherever they appear in a line.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

from ensemble.activities.scrub import REDACTED, scrub, secret_values
from ensemble.spec.errors import InputError

_SECRET_FIELD = re.compile(
    r"(^|_)(secret|password|passwd|api_?key|authorization|credentials?|access_?token|refresh_?token|bearer|cookie)s?($|_)",
    re.I,
)
__all__ = ["REDACTED", "env_level", "secret_values", "setup"]


class _Redactor:
    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return scrub(value)
        if isinstance(value, dict):
            return {k: REDACTED if _SECRET_FIELD.search(str(k)) else self.scrub(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.scrub(v) for v in value]
        return value

    def __call__(self, logger: WrappedLogger, name: str, event: EventDict) -> EventDict:
        return self.scrub(event)


def _one_line_errors(logger: WrappedLogger, name: str, event: EventDict) -> EventDict:
    """An exception becomes an `error` field (`Type: message`) unless ENSEMBLE_DEBUG is set."""
    exc = event.pop("exc_info", None)
    if exc and not os.environ.get("ENSEMBLE_DEBUG"):
        if exc is True:
            exc = sys.exc_info()
        err = exc[1] if isinstance(exc, tuple) else exc if isinstance(exc, BaseException) else None
        if err is not None:
            event.setdefault("error", f"{type(err).__name__}: {err}".replace("\n", " "))
    elif exc:
        event["exc_info"] = exc
    return event


def _json_wanted() -> bool:
    forced = os.environ.get("ENSEMBLE_LOG_FORMAT", "").strip().lower()
    if forced in ("json", "console"):
        return forced == "json"
    return not sys.stderr.isatty()


QUIET_AT_INFO = ("httpx", "httpcore")
LEVEL_ENV = "ENSEMBLE_LOG_LEVEL"
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def env_level(default: int) -> int:
    """The level `ENSEMBLE_LOG_LEVEL` asks for (debug, info, warning, error), else `default`."""
    raw = os.environ.get(LEVEL_ENV, "").strip().lower()
    if not raw:
        return default
    if raw not in _LEVELS:
        raise InputError(f"{LEVEL_ENV}={raw[:40]!r} is not a log level: use debug, info, warning or error")
    return _LEVELS[raw]


def setup(level: int = logging.INFO) -> None:
    """Route structlog and the standard library's logging to stderr, one line per record."""
    as_json = _json_wanted()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _one_line_errors,
    ]
    final: list[Any] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta, _Redactor()]
    if as_json:
        final += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer(default=str)]
    else:
        final.append(structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=final))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request at INFO ("HTTP Request: POST ... 200 OK"): a line per model call
    # that `agent finished` already covers; their warnings and errors still show (DEBUG shows all).
    for name in QUIET_AT_INFO:
        logging.getLogger(name).setLevel(level if level <= logging.DEBUG else max(level, logging.WARNING))


def as_library() -> None:
    """Unless this process configured structlog (the CLI and `worker.py` do, with `setup`), send
    Ensemble's records, scrubbed, to the standard library's logging, whose handlers the embedding
    application owns, instead of structlog's default of printing to stdout."""
    if structlog.is_configured():
        return
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.add_log_level,
            _one_line_errors,
            _Redactor(),
            structlog.processors.KeyValueRenderer(key_order=["event"], drop_missing=True),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
