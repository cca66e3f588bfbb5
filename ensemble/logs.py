"""Process logging for the CLI and workers: one line per record, no tracebacks unless
ENSEMBLE_DEBUG is set (an agent's failure is on the run's record; the line says what it was)."""

from __future__ import annotations

import logging
import os
import sys


class OneLineFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info and not os.environ.get("ENSEMBLE_DEBUG"):
            err = record.exc_info[1]
            record = logging.makeLogRecord(record.__dict__)
            record.msg, record.args, record.exc_info, record.exc_text = (
                f"{record.getMessage()}: {type(err).__name__}: {err}".replace("\n", " "),
                None,
                None,
                None,
            )
        return super().format(record)


def setup(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
