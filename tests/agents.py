"""Agents the tests run (imported by in-process and subprocess workers alike)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from pydantic import BaseModel

from ensemble import AgentContext, RetrySpec, agent

FAST_RETRY = RetrySpec(initial_interval_s=0.1, backoff_coefficient=1.0, max_attempts=3)
RELEASE = asyncio.Event()


class Text(BaseModel):
    text: str


class Count(BaseModel):
    chars: int
    words: int


@agent(description="Upper-cases text")
def shout(data: Text) -> Text:
    return Text(text=data.text.upper())


@agent(description="Counts characters and words")
async def count(data: Text) -> Count:
    return Count(chars=len(data.text), words=len(data.text.split()))


@agent(description="Reverses text", fast=True, timeout_s=5)
def mirror(data: Text) -> Text:
    return Text(text=data.text[::-1])


@agent()
def echo(data: object) -> object:
    return data


BEAT_RELEASE = asyncio.Event()


@agent()
async def beating(data: dict) -> dict:
    """Heartbeats its progress (`data["progress"]`, as large as a transcript), then waits until the
    test releases it (in-process workers only)."""
    from temporalio import activity

    activity.heartbeat({"progress": data["progress"]})
    await BEAT_RELEASE.wait()
    return {"released": True}


@agent(retry=FAST_RETRY)
def flaky(data: dict, ctx: AgentContext) -> dict:
    """Fails its first attempt, succeeds on the second."""
    if ctx.attempt < 2:
        raise ConnectionError("transient blip")
    return {"attempt": ctx.attempt, "step": ctx.step, "run_id": ctx.run_id}


@agent(retry=FAST_RETRY)
def broken(data: dict) -> dict:
    raise ValueError("the ledger is unbalanced")


@agent(retry=RetrySpec(initial_interval_s=0.1, max_attempts=5, non_retryable_errors=["KeyError"]))
def picky(data: dict) -> dict:
    raise KeyError("customer_id")


@agent()
async def held(data: dict) -> dict:
    """Waits until the test releases it (in-process workers only)."""
    await RELEASE.wait()
    return {"released": True}


@agent(timeout_s=4, retry=RetrySpec(initial_interval_s=0.2, max_attempts=5))
def slow(data: dict, ctx: AgentContext) -> dict:
    """Marks that it started (a file per attempt), then works for a while."""
    marker = Path(data["marker_dir"]) / f"{ctx.run_id}.{ctx.attempt}"
    marker.write_text(str(ctx.attempt))
    time.sleep(float(data.get("seconds", 1.5)))
    return {"done": True, "attempt": ctx.attempt}


@agent(retry=RetrySpec(max_attempts=1))
def voter(data: dict) -> dict:
    """Votes what it is told to (`{"vote": ..., "confidence": ...}`), or fails when told `fail`."""
    if data.get("vote") == "fail":
        raise RuntimeError("voter broke")
    return {"vote": data["vote"], "confidence": data.get("confidence", 1.0), "reason": f"told {data['vote']}"}


@agent()
async def sleeper(data: dict) -> dict:
    """Sleeps `seconds` (real time) and returns its label."""
    await asyncio.sleep(float(data.get("seconds", 0)))
    return {"label": data.get("label"), "vote": data.get("vote", "approve")}


IN_FLIGHT = {"now": 0, "most": 0}


@agent()
async def gauge(data: dict) -> dict:
    """Counts how many of it run at once in this process (IN_FLIGHT), for `seconds`."""
    IN_FLIGHT["now"] += 1
    IN_FLIGHT["most"] = max(IN_FLIGHT["most"], IN_FLIGHT["now"])
    try:
        await asyncio.sleep(float(data.get("seconds", 0.3)))
    finally:
        IN_FLIGHT["now"] -= 1
    return {"label": data.get("label")}


@agent()
def writer(data: dict) -> dict:
    """Returns `data` so a step can write it to state keys."""
    return data


@agent()
def referee(data: dict) -> dict:
    """Settles a conflict by taking the longest candidate value, or a vote by approving."""
    if "candidates" in data:
        best = max(data["candidates"], key=lambda c: (len(str(c["value"])), c["branch"]))
        return {"value": best["value"], "reason": f"longest value, from {best['branch']}"}
    return {"vote": "approve", "reason": f"{len(data['ballots'])} ballots seen: {data['why']}"}


@agent()
def boss(data: dict) -> dict:
    """Returns the plan it is given; after a failure, the `replan` it is given (when there is one)."""
    if data.get("failures") and data.get("replan"):
        return {"subtasks": data["replan"], "rationale": f"re-planned after: {data['failures'][-1]}"}
    return {"subtasks": data["plan"], "rationale": "as given"}
