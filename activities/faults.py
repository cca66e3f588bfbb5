"""Fault injection, for chaos tests and failure rehearsals only. Off unless the worker's
environment sets ENSEMBLE_FAULTS, a comma-separated list of AGENT=FAULT:

    ENSEMBLE_FAULTS="classifier=delay:4,compliance=error,router=timeout"

- `delay:SECONDS`: the agent waits that long, then runs normally;
- `error`: every attempt fails with a retryable error (so the step exhausts its retries);
- `error:N`: only the first N attempts fail, then the agent runs normally;
- `timeout`: the attempt hangs (heartbeating, if the agent heartbeats) until its start-to-close
  timeout passes, so Temporal times it out and retries it.

AGENT is an agent's name, or `*` for every agent. A malformed value stops the worker at start
with one line saying what is wrong (see `check`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from dataclasses import dataclass

from temporalio import activity
from temporalio.exceptions import ApplicationError

from ensemble.activities.errors import permanent
from ensemble.spec import AgentCall
from ensemble.spec.errors import InputError

ENV = "ENSEMBLE_FAULTS"
_FAULT = re.compile(r"^(?:(delay):(\d+(?:\.\d+)?)|(error)(?::(\d+))?|(timeout))$")
_AGENT = re.compile(r"^(\*|[A-Za-z][A-Za-z0-9_.-]*)$")


@dataclass(frozen=True)
class Fault:
    agent: str
    kind: str  # delay, error, timeout
    seconds: float = 0.0
    attempts: int | None = None  # error:N fails the first N attempts only


class FaultSpecError(ValueError):
    pass


def parse(text: str) -> dict[str, Fault]:
    """The faults a value of ENSEMBLE_FAULTS asks for, by agent name."""
    faults: dict[str, Fault] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        agent, sep, spec = (s.strip() for s in item.partition("="))
        if not sep or not _AGENT.match(agent):
            raise FaultSpecError(f"'{item}' is not AGENT=FAULT")
        m = _FAULT.match(spec)
        if not m:
            raise FaultSpecError(f"'{item}': unknown fault '{spec}' (use delay:SECONDS, error, error:N or timeout)")
        if agent in faults:
            raise FaultSpecError(f"agent '{agent}' has two faults")
        if m.group(1):
            faults[agent] = Fault(agent, "delay", seconds=float(m.group(2)))
        elif m.group(3):
            faults[agent] = Fault(agent, "error", attempts=int(m.group(4)) if m.group(4) else None)
        else:
            faults[agent] = Fault(agent, "timeout")
    return faults


_parsed: tuple[str, dict[str, Fault] | FaultSpecError] | None = None


def current() -> dict[str, Fault]:
    """The faults of this process's environment (parsed once per distinct value)."""
    global _parsed
    raw = os.environ.get(ENV, "")
    if _parsed is None or _parsed[0] != raw:
        try:
            _parsed = (raw, parse(raw))
        except FaultSpecError as err:
            _parsed = (raw, err)
    if isinstance(_parsed[1], FaultSpecError):
        raise _parsed[1]
    return _parsed[1]


def check() -> dict[str, Fault]:
    """At worker start: the faults in effect, or one clear error for a malformed value."""
    try:
        faults = current()
    except FaultSpecError as err:
        raise InputError(f"{ENV}: {err}; e.g. {ENV}='classifier=delay:4,compliance=error,router=timeout'") from None
    if faults:
        described = ", ".join(f"{f.agent}={f.kind}" for f in faults.values())
        logging.getLogger("ensemble.faults").warning("fault injection is ON (%s): %s", ENV, described)
    return faults


async def inject(call: AgentCall) -> None:
    """Apply the fault configured for this agent, if any, before its executor runs."""
    if not os.environ.get(ENV):
        return
    try:
        faults = current()
    except FaultSpecError as err:
        raise permanent(f"{ENV} on this worker is malformed: {err}", kind="BadFaultSpec") from None
    fault = faults.get(call.agent.name) or faults.get("*")
    if fault is None:
        return
    who = f"agent '{call.agent.name}'"
    if fault.kind == "delay":
        activity.logger.warning("%s: injected delay of %ss (%s)", who, fault.seconds, ENV)
        await _wait(call, fault.seconds)
    elif fault.kind == "error":
        if fault.attempts is None or call.context.attempt <= fault.attempts:
            raise ApplicationError(
                f"{who}: injected fault 'error' ({ENV}), attempt {call.context.attempt}", type="InjectedFault"
            )
    else:
        activity.logger.warning("%s: injected hang until the attempt times out (%s)", who, ENV)
        await _wait(call, call.agent.timeout_s + 2.0)  # Temporal times the attempt out first
        raise ApplicationError(f"{who}: injected fault 'timeout' ({ENV}) outlived the attempt", type="InjectedFault")


async def _wait(call: AgentCall, seconds: float) -> None:
    """Sleep, heartbeating as the agent's spec asks, so only the fault's own length counts."""
    heartbeat_s = call.agent.heartbeat_s
    beat = heartbeat_s and not activity.info().is_local
    step = min(heartbeat_s / 2, 1.0) if heartbeat_s and beat else seconds
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while (left := end - loop.time()) > 0:
        if beat:
            activity.heartbeat("fault")
        await asyncio.sleep(min(step, left))
