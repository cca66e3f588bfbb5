"""Errors Ensemble reports to a person: one line, and the exit code the CLI uses."""

from __future__ import annotations


class EnsembleError(Exception):
    """A failure the user can act on. `exit_code`: 1 refused or failed, 2 usage or input error."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.details: list[str] = [message]


class InputError(EnsembleError):
    """Bad usage or bad input (unknown flow, invalid flow file, input failing the schema)."""

    exit_code = 2
