"""The model-bound suite (`python -m bench --suite model`): runs of 5 model calls against a loopback
model server with a set latency, N in flight at once, Ensemble beside a hand-written plain-Temporal
workflow (the baseline) and LangGraph, all calling the same server with the same request.

Per (system, N, L): runs/s (N over the wall time from the first start to the last result), the
ideal min(N / (5 L), the baseline's rate at L = 0 and the same N), CPU per model step of the
Temporal server, the worker, this client and the model server (from /proc), the worker's RSS, and
the workflow-task schedule-to-start p50/p99 and history bytes per step from a sample of histories.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bench.modelflows import MODEL_BASELINE_WORKFLOW, langgraph_graph, model_flow
from bench.scenarios import cpu_seconds
from bench.server import ROOT, WorkerProcess, rss_mb
from bench.stats import percentile
from ensemble.authoring.flows import deployed, parse_flow
from ensemble.runtime import flow_versions
from ensemble.spec import WORKFLOW_NAME, FlowOutcome, RunRequest, versions
from ensemble.spec.run import flow_version, without_duplicate_agents

TEXT = "Invoice 2026-114 from ACME: 3 items, total 1,240.00 EUR, due in 30 days."


@dataclass
class ModelPlan:
    mode: str
    points: list[tuple[int, float]]  # (N in flight, model latency s), L = 0 first for each N
    steps: int = 5
    jitter: float = 0.0  # uniform extra latency per call, seconds
    history_sample: int = 40
    systems: tuple[str, ...] = ("ensemble", "temporal", "langgraph")
    caps_point: tuple[int, float] | None = (100, 1.0)  # where raising each cap is tried
    settings: tuple[str, ...] | None = None  # the CAPS tried there (default all)
    caps_rounds: int = 1  # rounds of the settings in rotation; each setting's median round is reported
    crash_trials: int = 1


# about 5 minutes on a loaded 2-core machine (a server per system and point, caps, crash cost)
MODEL_QUICK = ModelPlan(mode="quick", points=[(50, 0.0), (50, 1.0)], history_sample=10, caps_point=(50, 1.0))
MODEL_FULL = ModelPlan(
    mode="full",
    points=[
        (100, 0.0),
        (100, 1.0),
        (100, 5.0),
        (1000, 0.0),
        (1000, 1.0),
        (1000, 5.0),
        (2000, 0.0),
        (2000, 1.0),
        (2000, 5.0),
    ],
    caps_point=(1000, 1.0),
    crash_trials=3,
)

# Each setting is tried on its own worker against the product's defaults, at `caps_point`.
AGAIN = "defaults, again after the others (how far the sweep drifted)"
CAPS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "model connections 64 (the default before this revision)": {"env": {"ENSEMBLE_LLM_MAX_CONNECTIONS": "64"}},
    "young collections every 20,000 allocations (ENSEMBLE_GC_THRESHOLD=20000)": {
        "env": {"ENSEMBLE_GC_THRESHOLD": "20000"}
    },
    "activity slots 2000 (ENSEMBLE_ACTIVITY_SLOTS)": {"env": {"ENSEMBLE_ACTIVITY_SLOTS": "2000"}},
    "activity slots 1000 (ENSEMBLE_ACTIVITY_SLOTS)": {"env": {"ENSEMBLE_ACTIVITY_SLOTS": "1000"}},
    "activity slots 300 (ENSEMBLE_ACTIVITY_SLOTS)": {"env": {"ENSEMBLE_ACTIVITY_SLOTS": "300"}},
    "activity slots 500 (ENSEMBLE_ACTIVITY_SLOTS)": {"env": {"ENSEMBLE_ACTIVITY_SLOTS": "500"}},
    "activity slots adaptive, up to 500: the floor alone (ENSEMBLE_ACTIVITY_SLOTS=adaptive:500)": {
        "env": {"ENSEMBLE_ACTIVITY_SLOTS": "adaptive:500"}
    },
    "activity slots adaptive, up to 2000 (ENSEMBLE_ACTIVITY_SLOTS=adaptive)": {
        "env": {"ENSEMBLE_ACTIVITY_SLOTS": "adaptive"}
    },
    "activity slots 300, sticky schedule-to-start timeout 30 s (sticky_queue_schedule_to_start_timeout)": {
        "env": {"ENSEMBLE_ACTIVITY_SLOTS": "300"},
        "options": {"sticky_queue_schedule_to_start_timeout": 30},
    },
    "activity slots 300, workflow cache 4000 (max_cached_workflows)": {
        "env": {"ENSEMBLE_ACTIVITY_SLOTS": "300"},
        "options": {"max_cached_workflows": 4000},
    },
    "activity slots auto, up to 2000 (ENSEMBLE_ACTIVITY_SLOTS=auto)": {"env": {"ENSEMBLE_ACTIVITY_SLOTS": "auto"}},
    "activity slots auto, up to 4000 (ENSEMBLE_ACTIVITY_SLOTS=auto:4000)": {
        "env": {"ENSEMBLE_ACTIVITY_SLOTS": "auto:4000"}
    },
    "agent threads 1000 (ENSEMBLE_AGENT_THREADS)": {"env": {"ENSEMBLE_AGENT_THREADS": "1000"}},
    # The workflow cache (2,000 runs by default; the SDK's is 1,000): with more runs in flight,
    # evicted runs replay their history at each workflow task (and the server sends it whole).
    "workflow cache 4000 (ENSEMBLE_WORKFLOW_CACHE)": {"env": {"ENSEMBLE_WORKFLOW_CACHE": "4000"}},
    "workflow cache 1000, the SDK's (the default before this revision)": {"env": {"ENSEMBLE_WORKFLOW_CACHE": "1000"}},
    # The server's own caches (dynamic config of the embedded server; one history shard holds
    # every run): Temporal's defaults are 512 runs' mutable state and 512 KiB of events.
    "server caches 4096 runs, 16 MiB of events": {
        "server": {"history.cacheMaxSize": 4096, "history.eventsCacheMaxSizeBytes": 16 * 1024 * 1024}
    },
    "server run cache 4096 (history.cacheMaxSize)": {"server": {"history.cacheMaxSize": 4096}},
    "server events cache 16 MiB (history.eventsCacheMaxSizeBytes)": {
        "server": {"history.eventsCacheMaxSizeBytes": 16 * 1024 * 1024}
    },
    # Not a cap: what compressed payloads cost or save the server and the worker per step. The
    # runs the bench starts are written compressed too ("client_env").
    "compressed payloads (ENSEMBLE_PAYLOAD_COMPRESSION=deflate)": {
        "env": {"ENSEMBLE_PAYLOAD_COMPRESSION": "deflate"},
        "client_env": {"ENSEMBLE_PAYLOAD_COMPRESSION": "deflate"},
    },
    "workflow-task slots 1000": {"options": {"max_concurrent_workflow_tasks": 1000}},
    "workflow-task pollers 20, activity pollers 20": {
        "options": {"max_concurrent_workflow_task_polls": 20, "max_concurrent_activity_task_polls": 20}
    },
    "model connections per provider 2000 (ENSEMBLE_LLM_MAX_CONNECTIONS)": {
        "env": {"ENSEMBLE_LLM_MAX_CONNECTIONS": "2000"}
    },
}


def log(msg: str) -> None:
    print(f"[bench model {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class ModelServerProcess:
    """`python -m bench.modelserver` in its own process, with its request log."""

    def __init__(self, home: Path) -> None:
        self.log_path = home / "model-requests.jsonl"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.modelserver", "--log", str(self.log_path)],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("listening on "):
            raise RuntimeError("the benchmark's model server did not start")
        self.port = int(line.split()[-1])
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def control(self, **change: Any) -> dict[str, Any]:
        return httpx.post(f"http://127.0.0.1:{self.port}/control", json=change, timeout=10).json()

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"http://127.0.0.1:{self.port}/stats", timeout=10).json()

    def keys(self) -> list[str]:
        return [json.loads(line)["key"] for line in self.log_path.read_text().splitlines() if line.strip()]

    def worker_env(self) -> dict[str, str]:
        return {"OPENAI_BASE_URL": self.base_url, "ENSEMBLE_EGRESS_ALLOW": "127.0.0.1", "ENSEMBLE_LLM": ""}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@dataclass
class Systems:
    """How to start one run on each system, and the processes each one's work happens in."""

    client: Client
    model: ModelServerProcess
    home: Path
    steps: int
    queues: dict[str, str] = field(default_factory=dict)
    pids: dict[str, dict[str, int]] = field(default_factory=dict)
    _lg: Any = None
    _lg_conn: Any = None
    _ens: Client | None = None

    def ensemble_client(self) -> Client:
        """The client Ensemble runs are started with: Ensemble's payload converter."""
        if self._ens is None:
            from bench.server import ensemble_converter

            self._ens = Client(**{**self.client.config(), "data_converter": ensemble_converter()})
        return self._ens

    def request(self, queue: str) -> RunRequest:
        loaded = deployed(parse_flow(model_flow(self.steps), "bench model flow"))  # as if found by name
        # as the client records it (runtime/launch.start_request): each agent once
        return without_duplicate_agents(
            RunRequest(flow=loaded.spec, agents=loaded.agents, input=None, task_queue=queue)
        )

    async def langgraph(self) -> Any:
        if self._lg is None:
            import aiosqlite
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

            self._lg_conn = await aiosqlite.connect(str(self.home / "langgraph-model.db"))
            saver = AsyncSqliteSaver(self._lg_conn)
            await saver.setup()
            self._lg = langgraph_graph(self.model.base_url, self.steps, saver)
        return self._lg

    async def close(self) -> None:
        if self._lg_conn is not None:
            await self._lg_conn.close()

    async def batch(self, system: str, n: int, queue: str | None = None) -> tuple[float, list[Any]]:
        """Start n runs at once, wait for all; (seconds, handles)."""
        t = time.perf_counter()
        if system == "langgraph":
            graph = await self.langgraph()

            async def lg_one() -> None:
                run = f"lg-{uuid.uuid4().hex[:12]}"
                out = await graph.ainvoke(
                    {"run": run, "text": TEXT}, {"configurable": {"thread_id": run}}, durability="sync"
                )
                if not out.get("text"):
                    raise RuntimeError("a LangGraph run returned no text")

            await asyncio.gather(*(lg_one() for _ in range(n)))
            return time.perf_counter() - t, []
        queue = queue or self.queues[system]
        req = self.request(queue) if system == "ensemble" else None
        named: set[str] = set()  # as the client starts a run of a deployed flow (runtime/launch.start_request)
        if req is not None and flow_versions.enabled():
            found = await flow_versions.record(self.ensemble_client(), flow_version(req))
            named |= {found} if found is not None else set()

        async def one() -> Any:
            run = f"mb-{system[:3]}-{uuid.uuid4().hex[:12]}"
            if system == "ensemble":
                assert req is not None
                with versions.naming(named):
                    h = await self.ensemble_client().start_workflow(WORKFLOW_NAME, req.model_copy(update={"input": {"run": run, "text": TEXT}}),
                                                         id=run, task_queue=queue, result_type=FlowOutcome)  # fmt: skip
                outcome = await h.result()
                if len(outcome.steps) != self.steps or not outcome.output:
                    raise RuntimeError(f"an Ensemble run finished {outcome.steps} with output {outcome.output!r}")
            else:
                h = await self.client.start_workflow(
                    MODEL_BASELINE_WORKFLOW, args=[run, self.steps, TEXT], id=run, task_queue=queue
                )
                await h.result()
            return h

        handles = await asyncio.gather(*(one() for _ in range(n)))
        return time.perf_counter() - t, list(handles)


async def history_facts(handles: list[Any], steps: int, sample: int) -> dict[str, Any]:
    """Workflow-task schedule-to-start (ms) and history bytes per model step, from a sample."""
    waits: list[float] = []
    sizes: list[float] = []
    for h in handles[:: max(1, len(handles) // sample)][:sample]:
        events = list((await h.fetch_history()).events)
        sizes.append(sum(e.ByteSize() for e in events) / steps)
        scheduled: int | None = None
        for e in events:
            if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
                scheduled = e.event_time.ToNanoseconds()
            elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED and scheduled is not None:
                waits.append((e.event_time.ToNanoseconds() - scheduled) / 1e6)
                scheduled = None
    if not waits:
        return {}
    return {
        "wft_schedule_to_start_ms": {"p50": percentile(waits, 50), "p99": percentile(waits, 99), "max": max(waits)},
        "history_bytes_per_step": statistics.median(sizes),
    }


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    out = {name: cpu_seconds(pid) for name, pid in pids.items()}
    out["client"] = cpu_seconds()
    return out


async def measure(sys_: Systems, system: str, n: int, latency: float, sample: int, queue: str | None = None,
                  pids: dict[str, int] | None = None) -> dict[str, Any]:  # fmt: skip
    sys_.model.control(latency=latency)
    pids = {**(pids or sys_.pids.get(system, {})), "model_server": sys_.model.pid}
    calls_before = sys_.model.stats()["requests"]
    before = _cpu(pids)
    seconds, handles = await sys_.batch(system, n, queue)
    after = _cpu(pids)
    calls = sys_.model.stats()["requests"] - calls_before
    steps = n * sys_.steps
    out: dict[str, Any] = {
        "runs": n, "latency_s": latency, "seconds": round(seconds, 3), "runs_per_s": n / seconds,
        "model_calls": calls, "cpu_ms_per_step": {k: (after[k] - before[k]) * 1000 / steps for k in before},
    }  # fmt: skip
    if "worker" in pids:
        out["worker_rss_mb"] = rss_mb(pids["worker"])
    if handles:
        out.update(await history_facts(handles, sys_.steps, sample))
    return out


def ideal(n: int, steps: int, latency: float, baseline_l0: float | None) -> float | None:
    bounds = [b for b in ((n / (steps * latency)) if latency else None, baseline_l0) if b]
    return min(bounds) if bounds else None


# The client waits on up to 2,000 results at once, each a long poll: the frontend allows 1,200 per
# namespace by default ("namespace concurrent poller limit exceeded").
SERVER_CONFIG = {"frontend.namespaceCount": 10000}


async def run_model_suite(plan: ModelPlan, home: Path, bench: Any) -> dict[str, Any]:
    """`bench` is the runner's Bench (servers and workers it stops at the end).

    Each system at each point runs on a server and a worker of their own, started for it (after a
    warm-up of 5 runs), and LangGraph on a checkpoint file of its own: a server's CPU per step grows
    with the closed runs its database holds (about a tenth more at 6,000 runs, BENCHMARKS.md), so on
    one server for the whole suite each point measured slower than the one before it, and the
    ideal (the baseline at L = 0 s, measured first) was set on the youngest database."""
    from bench.chains import langgraph_available

    model = ModelServerProcess(home)
    out: dict[str, Any] = {"plan": {k: v for k, v in plan.__dict__.items()}, "points": []}
    try:
        env = {"env": model.worker_env()}
        systems = list(plan.systems)
        if "langgraph" in systems and (missing := langgraph_available()) is not None:
            systems.remove("langgraph")
            out["langgraph_skipped"] = missing
        model.control(jitter=plan.jitter)
        baseline_l0: dict[int, float] = {}
        for n, latency in plan.points:
            point: dict[str, Any] = {"runs": n, "latency_s": latency, "systems": {}}
            for system in systems:
                log(f"N={n} L={latency:g}s: {system}")
                point["systems"][system] = await measure_alone(bench, model, home, plan, system, n, latency, env)
            if latency == 0 and "temporal" in point["systems"]:
                baseline_l0[n] = point["systems"]["temporal"]["runs_per_s"]
            point["ideal_runs_per_s"] = ideal(n, plan.steps, latency, baseline_l0.get(n))
            out["points"].append(point)
        if plan.caps_point or plan.crash_trials:
            srv, client = await bench.server("model", add=SERVER_CONFIG)
            sys_ = Systems(client, model, home, plan.steps)
            if plan.caps_point:
                out["caps"] = await caps(bench, sys_, plan, env)
            if plan.crash_trials:
                from bench.crash import crash_cost

                out["crash"] = await crash_cost(bench, srv, client, model, home, trials=plan.crash_trials,
                                                langgraph="langgraph" in systems)  # fmt: skip
            srv.stop()
    finally:
        model.stop()
    return out


WORKER_KIND = {"ensemble": "ensemble", "temporal": "model_baseline", "temporal-uncapped": "model_baseline"}
# The baseline with Ensemble's worker defaults instead of the SDK's (100 activity slots, a cache of
# 1,000 runs): whether a point short of its ideal is short for any Temporal worker on this machine.
UNCAPPED = {"max_concurrent_activities": 2000, "max_cached_workflows": 2000}
SYSTEMS = ("ensemble", "temporal", "temporal-uncapped", "langgraph")


async def measure_alone(bench: Any, model: ModelServerProcess, home: Path, plan: ModelPlan, system: str, n: int,
                        latency: float, env: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """One system at one point on a server and a worker of its own (LangGraph: a checkpoint file of
    its own), after a warm-up of 5 runs at L = 0 s."""
    tag = f"{system}-{n}-{latency:g}"
    if system == "langgraph":
        sys_ = Systems(None, model, home / f"lg-{tag}", plan.steps)  # type: ignore[arg-type]
        sys_.home.mkdir(parents=True, exist_ok=True)
        try:
            await measure(sys_, system, 5, 0.0, 1)
            return await measure(sys_, system, n, latency, plan.history_sample)
        finally:
            await sys_.close()
    srv, client = await bench.server(f"model-{tag}", add=SERVER_CONFIG)
    setting = env if system != "temporal-uncapped" else {**env, "options": {**env.get("options", {}), **UNCAPPED}}
    proc = bench.worker(srv, WORKER_KIND[system], setting)
    sys_ = Systems(client, model, home, plan.steps, queues={system: proc.task_queue},
                   pids={system: {"server": srv.pid, "worker": proc.pid}})  # fmt: skip
    try:
        await measure(sys_, system, 5, 0.0, 1)
        return await measure(sys_, system, n, latency, plan.history_sample)
    finally:
        bench.retire(proc)
        srv.stop()
        for db in srv.home.glob("temporal.db*"):  # 30-60 MB each; its log stays
            db.unlink()


async def caps(bench: Any, sys_: Systems, plan: ModelPlan, env: dict[str, Any]) -> dict[str, Any]:
    n, latency = plan.caps_point  # type: ignore[misc]
    found: dict[str, Any] = {"runs": n, "latency_s": latency, "settings": CAPS, "results": {}}
    names = [name for name in CAPS if plan.settings is None or name in plan.settings]
    rounds = max(1, plan.caps_rounds)
    if "defaults" in names and len(names) > 1 and rounds == 1:
        # Each setting runs on a server of its own, started for it: on one server shared by the
        # sweep, the server's CPU per step grew with the runs it had done (10.3 to 15.6 ms over five
        # settings), so later settings measured slower. The defaults again at the end show how far
        # the machine itself drifted; with rounds (the settings in rotation) each setting's median
        # round does that instead.
        names.append(AGAIN)
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(rounds):
        for i, name in enumerate(names):
            setting = CAPS.get(name, {})
            log(f"caps at N={n} L={latency:g}s, round {r + 1} of {rounds}: {name}")
            srv, client = await bench.server(f"caps-{r}-{i}", add={**SERVER_CONFIG, **setting.get("server", {})})
            on_it = replace(sys_, client=client, _ens=None)
            merged = {"options": setting.get("options", {}), "env": {**env["env"], **setting.get("env", {})}}
            proc: WorkerProcess = bench.worker(srv, "ensemble", merged)
            try:
                with client_env(setting.get("client_env", {})):
                    await on_it.batch("ensemble", 5, proc.task_queue)  # warm-up
                    got = await measure(on_it, "ensemble", n, latency, 10, queue=proc.task_queue,
                                        pids={"server": srv.pid, "worker": proc.pid})  # fmt: skip
            except Exception as err:  # a setting that makes runs fail is a finding, not the end of the suite
                got = {"failed": f"{type(err).__name__}: {err}"[:300], "cause": _cause(err)}
                log(f"caps: {name} failed: {got['cause']}")
            samples[name].append(got)
            bench.retire(proc)
            srv.stop()
    found["rounds"] = rounds
    found["results"] = {name: median_round(got) for name, got in samples.items()}
    return found


@contextlib.contextmanager
def client_env(values: dict[str, str]) -> Iterator[None]:
    """The bench process's own environment with `values` while a setting is measured (the runs it
    starts are written as a client with that setting writes them)."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def median_round(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median rate (the lower middle one of an even count), with every round's
    rate beside it; a setting whose runs failed in any round is reported by its failure."""
    failed = [s for s in samples if "failed" in s]
    if failed:
        return {**failed[0], "failed_rounds": len(failed)}
    if len(samples) == 1:
        return samples[0]
    ranked = sorted(samples, key=lambda s: s["runs_per_s"])
    return {**ranked[(len(ranked) - 1) // 2], "rounds_runs_per_s": [s["runs_per_s"] for s in samples]}


def _cause(err: BaseException) -> str:
    """The innermost cause of a failed run (e.g. `activity Heartbeat timeout`)."""
    while err.__cause__ is not None:
        err = err.__cause__
    return str(err)[:200]
