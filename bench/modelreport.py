"""The model-bound suite's report (markdown) from its results (bench/modelbound.py)."""

from __future__ import annotations

from typing import Any

from bench.stats import fmt_ms

NAMES = {"ensemble": "Ensemble", "temporal": "plain Temporal (baseline)", "langgraph": "LangGraph + AsyncSqliteSaver"}


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _f(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _cpu(m: dict[str, Any], key: str) -> str:
    v = m.get("cpu_ms_per_step", {}).get(key)
    return "–" if v is None else fmt_ms(v)


def _row(label: str, m: dict[str, Any], ideal: float | None, base: dict[str, Any] | None) -> list[str]:
    wft = m.get("wft_schedule_to_start_ms") or {}
    vs = m["runs_per_s"] / base["runs_per_s"] if base else None
    cpu = sum(m["cpu_ms_per_step"].get(k, 0) for k in ("server", "worker"))
    base_cpu = sum(base["cpu_ms_per_step"].get(k, 0) for k in ("server", "worker")) if base else 0
    return [
        label, _f(m["runs_per_s"]), _f(vs) + "×" if vs else "–", f"{100 * m['runs_per_s'] / ideal:.0f} %" if ideal else "–",
        _cpu(m, "server"), _cpu(m, "worker"), _cpu(m, "client"), _f(cpu / base_cpu) + "×" if base_cpu and cpu else "–",
        fmt_ms(m["worker_rss_mb"]["peak_mb"]) if "worker_rss_mb" in m else "–",
        f"{fmt_ms(wft['p50'])} / {fmt_ms(wft['p99'])}" if wft else "–",
        f"{m['history_bytes_per_step']:.0f}" if m.get("history_bytes_per_step") else "–",
        str(m["model_calls"]),
    ]  # fmt: skip


HEAD = ["system", "runs/s", "vs baseline", "of ideal", "CPU ms/step server", "worker", "client",
        "server+worker vs baseline", "worker peak RSS MB", "WFT sched→start p50 / p99 ms", "history B/step", "model calls"]  # fmt: skip


def render(results: dict[str, Any]) -> str:
    m = results["model"]
    v = results["versions"]
    out = ["# Model-bound benchmark\n"]
    before, after = results["machine_before"], results["machine_after"]
    out.append(
        f"Finished {results['finished_at']} in {results['seconds']:.0f} s on {before['cpus']} CPUs "
        f"({before['platform']}); load average before {before['load_avg']}, after {after['load_avg']}. "
        f"temporalio {v.get('temporalio')}, LangGraph {v.get('langgraph')}. {results.get('note') or ''}\n"
    )
    out.append(
        "Runs of 5 model calls each, N started at once, against the loopback model server "
        "(`bench/modelserver.py`) answering every call after L seconds. CPU is per model step, from /proc "
        "(server = Temporal server, worker = the system's worker process, client = the benchmark process, "
        "which is where LangGraph runs). Ideal = min(N / (5 L), the baseline's runs/s at L = 0 and the same N).\n"
    )
    if m.get("langgraph_skipped"):
        out.append(f"LangGraph skipped: {m['langgraph_skipped']}\n")
    for point in m["points"]:
        out.append(f"\n## N = {point['runs']}, L = {point['latency_s']:g} s (ideal {_f(point['ideal_runs_per_s'])} runs/s)\n\n")
        base = point["systems"].get("temporal")
        rows = [_row(NAMES.get(k, k), s, point["ideal_runs_per_s"], base) for k, s in point["systems"].items()]
        out.append(_table(HEAD, rows))
    if m.get("caps"):
        c = m["caps"]
        out.append(f"\n## Caps: Ensemble at N = {c['runs']}, L = {c['latency_s']:g} s, each setting raised on its own worker\n\n")
        d = c["results"].get("defaults")
        rows = [_row(name, r, None, d) for name, r in c["results"].items()]
        out.append(_table(["setting", *HEAD[1:]], rows).replace("vs baseline", "vs defaults"))
    if m.get("crash"):
        c = m["crash"]
        out.append(f"\n## Crash cost: SIGKILL mid-run, {c['steps']} model calls per run\n\n")
        out.append("The worker (LangGraph: its process) is killed by the model server when the request of step 4 (`m4`) "
                   "or step 5 (`m5`) arrives, then started again. The call in flight is lost with the process and "
                   f"sent again by any system, so the floor is {c['floor']} calls; calls above it are finished calls "
                   "paid twice.\n\n")  # fmt: skip
        rows = []
        for system in ("ensemble", "langgraph"):
            for t in c.get(system, []):
                rows.append([NAMES[system], t["killed_at"], t["status"], str(t["model_calls"]), str(t["finished_calls_paid_twice"]), _f(t["seconds"], 1)])
        out.append(_table(["system", "killed when this request arrived", "run", "model calls", "finished calls paid twice", "seconds"], rows))
    return "".join(out)
