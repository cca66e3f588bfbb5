"""Agents that misbehave, for the reliability tests."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ensemble import RetrySpec, agent

ONCE = RetrySpec(initial_interval_s=0.1, backoff_coefficient=1.0, max_attempts=1)
TWICE = RetrySpec(initial_interval_s=0.1, backoff_coefficient=1.0, max_attempts=2)


@agent(description="Sleeps far past its timeout in a plain (sync) function", timeout_s=2, retry=ONCE)
def rel_hang(data: dict) -> dict:
    time.sleep(float(data.get("sleep_s", 60)))
    return {"woke": True}


@agent(description="Returns quickly from a plain function", timeout_s=10)
def rel_quick(data: dict) -> dict:
    return {"n": data.get("n", 0), "ok": True}


@agent(description="Returns an output of `mb` megabytes", timeout_s=30, retry=TWICE)
def rel_big_output(data: dict) -> dict:
    return {"blob": "x" * int(float(data.get("mb", 3)) * 2**20)}


@agent(description="Returns something JSON cannot carry", timeout_s=10, retry=TWICE)
def rel_unserialisable(data: dict) -> dict:
    return {"handle": object()}


@agent(description="Raises an error with a 5 MB message", timeout_s=10, retry=TWICE)
def rel_huge_error(data: dict) -> dict:
    raise RuntimeError("boom " + "y" * 5 * 2**20)


@agent(description="Counts the characters of a document; records each execution in a file", timeout_s=60)
def rel_measure(data: dict) -> dict:
    record = os.environ.get("RELIABILITY_RECORD")
    if record:
        with open(record, "a") as fh:
            fh.write(f"{data.get('tag', '')}\n")
    return {"chars": len(data.get("text", ""))}


def attempts_file() -> Path | None:
    path = os.environ.get("RELIABILITY_RECORD")
    return Path(path) if path else None


@agent(description="Holds for `hold` seconds, then records that it ran", timeout_s=30)
def rel_hold(data: dict) -> dict:
    time.sleep(float(data.get("hold", 1)))
    record = os.environ.get("RELIABILITY_RECORD")
    if record:
        with open(record, "a") as fh:
            fh.write(f"hold:{data.get('tag', '')}\n")
    return {"held": True}


@agent(description="A group chat participant whose every message is `topic.kib` KiB long", timeout_s=30)
def rel_talker(data: dict) -> dict:
    return {"message": "y" * int(data["topic"]["kib"]) * 1024}
