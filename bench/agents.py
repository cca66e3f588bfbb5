"""The trivial agent every chain in the benchmark runs, and the flows built from it.

`tick` does no work: it stamps when it was entered and when it returns, on the machine's
monotonic clock (`t0`, `t1`, CLOCK_MONOTONIC, the same in every process) and on the wall clock
(`w0`, `w1`, to line up with the server's event times). The hand-off from step i to step i+1 is
`t0[i+1] - t1[i]`: everything the engine does between one agent's return and the next agent's
first line. Ensemble, the plain Temporal chain and LangGraph all run this same function.
"""

from __future__ import annotations

import time
from typing import Any

from temporalio import activity


def stamp(data: Any) -> dict[str, int]:
    t0, w0 = time.monotonic_ns(), time.time_ns()
    n = int(data.get("n", 0)) + 1 if isinstance(data, dict) else 1
    return {"n": n, "t0": t0, "w0": w0, "w1": time.time_ns(), "t1": time.monotonic_ns()}


async def tick(data: Any) -> dict[str, int]:
    """The Ensemble agent (handler `bench.agents:tick`)."""
    return stamp(data)


@activity.defn(name="bench_tick")
async def tick_activity(data: dict[str, Any]) -> dict[str, int]:
    """The same agent as a plain Temporal activity."""
    return stamp(data)


def spans(results: list[dict[str, int]]) -> list[tuple[int, int]]:
    return [(r["t0"], r["t1"]) for r in results]


# ---------------------------------------------------------------- Ensemble flows


def agents_block() -> list[dict[str, Any]]:
    return [
        {"name": "tick", "handler": "bench.agents:tick", "timeout_s": 30},
        {"name": "tick_fast", "handler": "bench.agents:tick", "timeout_s": 30, "fast": True},
    ]


def chain_flow(steps: int, fast: bool = False) -> dict[str, Any]:
    """`steps` agents in sequence, each reading the previous one's output."""
    agent = "tick_fast" if fast else "tick"
    names = [f"s{i:02d}" for i in range(1, steps + 1)]
    return {
        "name": f"bench_chain{steps}{'_fast' if fast else ''}",
        "agents": agents_block(),
        "steps": [
            {"name": name, "agent": agent, "input": f"${names[i - 1]}" if i else "$input"}
            for i, name in enumerate(names)
        ],
        "output": {"ticks": [f"${name}" for name in names]},
    }


def gate_flow() -> dict[str, Any]:
    """A run that parks at an approval gate, then runs one agent."""
    return {
        "name": "bench_parked",
        "identity": "asserted",  # decided by a plain name: the benchmark measures parking, not proofs
        "agents": agents_block(),
        "steps": [
            {"name": "approve", "gate": {"approvers": ["bench"], "timeout": "30d"}},
            {"name": "after", "agent": "tick", "input": {"n": 0}},
        ],
        "output": "$after",
    }
