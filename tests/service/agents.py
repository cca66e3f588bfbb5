"""Agents for the service's tests: one that succeeds on its third attempt, one that always fails."""

from __future__ import annotations

from ensemble import AgentContext, RetrySpec, agent

THREE_TRIES = RetrySpec(initial_interval_s=0.1, backoff_coefficient=1.0, max_attempts=3)


@agent(description="Fails its first two attempts, then answers", retry=THREE_TRIES)
async def shaky(data: dict, ctx: AgentContext) -> dict:
    if ctx.attempt < 3:
        raise RuntimeError(f"attempt {ctx.attempt} is not enough")
    return {"attempts": ctx.attempt}


@agent(description="Fails for good on every call", retry=RetrySpec(initial_interval_s=0.1, max_attempts=2))
async def service_broken(data: dict) -> dict:
    raise ValueError("broken on purpose")
