"""The measurements: hand-off latency of a chain, and runs per second at a given concurrency."""

from __future__ import annotations

import asyncio
import os
import resource
import statistics
import time
from pathlib import Path
from typing import Any, Protocol

from bench.agents import spans
from bench.history import SEGMENTS, analyse
from bench.stats import gaps_ms, percentile, spread, summary


class Chain(Protocol):
    temporal: bool
    pids: dict[str, int]  # the processes that do its work besides this one: {"server": pid, "worker": pid}

    async def run(self, steps: int) -> Any: ...


async def handoff(chains: dict[str, Chain], *, steps: int, warmup: int, runs: int, rounds: int) -> dict[str, Any]:
    """Run each chain `runs` times per round, the chains taking turns round by round so they see
    the same machine; the first `warmup` runs of each are not counted. Per chain: the p50 and
    p99 hand-off of each round (their median and range), every hand-off pooled, the client-side
    time per step, and what the histories of the last round say."""
    for chain in chains.values():
        for _ in range(warmup):
            await chain.run(steps)
    rounds_of: dict[str, list[dict[str, float]]] = {name: [] for name in chains}
    pooled: dict[str, list[float]] = {name: [] for name in chains}
    last: dict[str, list[Any]] = {name: [] for name in chains}
    for r in range(rounds):
        for name, chain in chains.items():
            gaps: list[float] = []
            seconds: list[float] = []
            for _ in range(runs):
                run = await chain.run(steps)
                if len(run.ticks) != steps:
                    raise RuntimeError(f"{name}: a chain of {steps} steps returned {len(run.ticks)} results")
                gaps += gaps_ms(spans(run.ticks))
                seconds.append(run.seconds)
                if r == rounds - 1:
                    last[name].append(run)
            pooled[name] += gaps
            rounds_of[name].append(
                {
                    "p50": percentile(gaps, 50),
                    "p99": percentile(gaps, 99),
                    "step_ms": statistics.median(seconds) * 1000 / steps,
                }
            )
    out: dict[str, Any] = {}
    for name, chain in chains.items():
        per_round = rounds_of[name]
        out[name] = {
            "p50": spread([x["p50"] for x in per_round]),
            "p99": spread([x["p99"] for x in per_round]),
            "step_ms": spread([x["step_ms"] for x in per_round]),
            "rounds": per_round,
            "all": summary(pooled[name]),
        }
        if chain.temporal:
            out[name]["history"] = await _histories(last[name])
    return out


async def _histories(runs: list[Any]) -> dict[str, Any]:
    wft: list[float] = []
    per_step: list[float] = []
    sizes: list[float] = []
    tasks: list[int] = []
    split: dict[str, list[float]] = {s: [] for s in SEGMENTS}
    for run in runs:
        history = await run.handle.fetch_history()
        found = analyse(list(history.events), run.ticks)
        wft += found["wft_ms"]
        per_step.append(found["events_per_step"])
        if found["bytes_per_step"] is not None:
            sizes.append(found["bytes_per_step"])
        tasks.append(found["workflow_tasks"])
        for key, values in found["split_ms"].items():
            split[key] += values
    return {
        "wft_ms": summary(wft) if wft else None,
        "workflow_tasks_per_run": statistics.median(tasks) if tasks else None,
        "events_per_step": statistics.median(per_step) if per_step else None,
        "bytes_per_step": statistics.median(sizes) if sizes else None,
        "split_ms": {k: statistics.median(v) for k, v in split.items() if v} or None,
    }


def ratios(result: dict[str, Any], a: str, b: str, key: str) -> dict[str, float] | None:
    """a / b of one measure, round by round (both measured in the same round), as a spread."""
    if a not in result or b not in result:
        return None
    pairs = zip(result[a]["rounds"], result[b]["rounds"])
    return spread([x[key] / y[key] for x, y in pairs if y[key] > 0])


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) a process has used so far: this one when pid is None."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu(chain: Chain) -> dict[str, float]:
    out = {name: cpu_seconds(pid) for name, pid in chain.pids.items()}
    out["client"] = cpu_seconds()
    return out


async def throughput(chain: Chain, *, steps: int, runs: int, concurrency: int) -> tuple[float, dict[str, float]]:
    """Runs of `steps` agents completed per second, `concurrency` at a time, and the CPU each
    process spent per run (ms): the server's and worker's as `chain.pids` names them, and this
    client's."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            run = await chain.run(steps)
            if len(run.ticks) != steps:
                raise RuntimeError(f"a run of {steps} steps returned {len(run.ticks)} results")

    before = _cpu(chain)
    t = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(runs)))
    rate = runs / (time.perf_counter() - t)
    after = _cpu(chain)
    return rate, {name: (after[name] - before[name]) * 1000 / runs for name in before}


async def throughputs(
    chains: dict[str, Chain], *, steps: int, plan: dict[int, int], rounds: int
) -> dict[str, dict[str, Any]]:
    """{chain: {concurrency: spread of runs/s, "cpu_ms": {concurrency: {process: median CPU ms
    per run}}}}; `plan` maps concurrency to runs per measurement."""
    seen: dict[str, dict[int, list[float]]] = {name: {c: [] for c in plan} for name in chains}
    cpu: dict[str, dict[int, list[dict[str, float]]]] = {name: {c: [] for c in plan} for name in chains}
    for _ in range(rounds):
        for concurrency, runs in plan.items():
            for name, chain in chains.items():
                rate, used = await throughput(chain, steps=steps, runs=runs, concurrency=concurrency)
                seen[name][concurrency].append(rate)
                cpu[name][concurrency].append(used)
    out: dict[str, dict[str, Any]] = {}
    for name, by_c in seen.items():
        out[name] = {str(c): spread(v) for c, v in by_c.items()}
        out[name]["cpu_ms"] = {
            str(c): {proc: statistics.median(x[proc] for x in samples) for proc in samples[0]}
            for c, samples in cpu[name].items()
        }
    return out
