"""Function agents that leak the worker's key into their failures (tests/test_secrets.py)."""

from __future__ import annotations

import os


def leak_in_message(data: dict) -> dict:
    raise RuntimeError(f"login to the CRM failed with key {os.environ['CRM_API_KEY']} (check it)")


def leak_at_the_cut(data: dict) -> dict:
    """The key straddling 300 characters, where messages used to be cut."""
    raise ValueError("z" * (300 - 12 - len("agent 'cut' raised ValueError: ")) + os.environ["CRM_API_KEY"])


def leak_in_cause(data: dict) -> dict:
    try:
        raise ConnectionError(f"refused: {os.environ['CRM_API_KEY']}")
    except ConnectionError as err:
        raise PermissionError("the CRM refused the login") from err


def fail_with_text(data: dict) -> dict:
    """Fails with the run's input in its message (encrypted failures, tests/runtime/test_codec.py)."""
    raise RuntimeError(f"order {data['text']} could not be placed")
