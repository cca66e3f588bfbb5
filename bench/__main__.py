"""`python -m bench [--quick] [--out FILE] [--json FILE]`: run the benchmark, write the report.

The full run (about 10-15 minutes on 2 cores) writes BENCHMARKS.md and bench/results.json; the
quick one (under 3 minutes, smaller samples) writes bench/out/quick.md and bench/out/quick.json
unless told otherwise."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from pathlib import Path

from bench import report, runner

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description="Ensemble benchmarks (see BENCHMARKS.md)")
    p.add_argument("--quick", action="store_true", help="small samples: about 2 minutes (engine), 5 (model)")
    p.add_argument(
        "--out", type=Path, default=None, help="markdown report (default BENCHMARKS.md; quick: bench/out/quick.md)"
    )
    p.add_argument(
        "--json", type=Path, default=None, help="raw results (default bench/results.json; quick: bench/out/quick.json)"
    )
    p.add_argument("--note", default="", help="a line about the conditions, printed in the report")
    p.add_argument(
        "--suite",
        choices=["engine", "model"],
        default="engine",
        help="engine: hand-off, throughput, parked runs (default); model: model-bound runs, caps, crash cost",
    )
    p.add_argument(
        "--points", default=None, help="model suite: N@L pairs to run instead of the plan's, e.g. 100@0,100@1"
    )
    p.add_argument(
        "--caps",
        default=None,
        help="model suite: the N@L point where each cap is raised (default the plan's; off: none)",
    )
    p.add_argument(
        "--jitter", type=float, default=None, help="model suite: uniform random extra latency per call, seconds"
    )
    p.add_argument("--crash-trials", type=int, default=None, help="model suite: kills per moment (default the plan's)")
    p.add_argument(
        "--systems",
        default=None,
        help="model suite: systems to run, e.g. ensemble,temporal (default ensemble,temporal,langgraph; temporal-uncapped: the baseline with Ensemble's 2,000 activity slots and cache of 2,000 runs)",
    )
    p.add_argument(
        "--settings",
        default=None,
        help="model suite: the caps settings to try, the starts of their names separated by | (default all)",
    )
    p.add_argument(
        "--caps-rounds",
        type=int,
        default=None,
        help="model suite: rounds of the caps settings in rotation, each on a server of its own; "
        "each setting's median round is reported (default 1)",
    )
    args = p.parse_args(argv)
    if args.suite == "model":
        return model_main(args)
    plan = runner.QUICK if args.quick else runner.FULL
    out = args.out or (ROOT / "bench" / "out" / "quick.md" if args.quick else ROOT / "BENCHMARKS.md")
    raw = args.json or (ROOT / "bench" / "out" / "quick.json" if args.quick else ROOT / "bench" / "results.json")
    results = asyncio.run(runner.run(plan))
    results["note"] = args.note
    for path in (out, raw):
        path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=1, sort_keys=True) + "\n"
    raw.write_text(text)
    # rendered from what the file holds, so the report is reproducible from it (tests/test_bench.py)
    out.write_text(report.render(json.loads(text)) + _sections_after_model_bound(out))
    print(f"wrote {out} and {raw} ({results['seconds']:.0f} s)")
    return 0


def _sections_after_model_bound(path: Path) -> str:
    """What `path` holds after its model-bound section (figures of other benches, such as
    `bench.longchat`), kept when the engine suite writes the file again."""
    from bench.modelreport import END

    old = path.read_text() if path.exists() else ""
    return old.partition(END)[2].lstrip("\n").join(["\n", ""]) if END in old else ""


def model_main(args: argparse.Namespace) -> int:
    """`python -m bench --suite model [--quick]`: writes bench/out/model[-quick].md and .json (the
    figures quoted in BENCHMARKS.md's model-bound section come from such a file)."""
    from bench import modelbound, modelreport

    plan = modelbound.MODEL_QUICK if args.quick else modelbound.MODEL_FULL
    if args.points:
        pairs = [x.split("@") for x in args.points.split(",")]
        plan = dataclasses.replace(plan, points=[(int(n), float(lat)) for n, lat in pairs])
    if args.caps == "off":
        plan = dataclasses.replace(plan, caps_point=None)
    elif args.caps:
        n, lat = args.caps.split("@")
        plan = dataclasses.replace(plan, caps_point=(int(n), float(lat)))
    if args.jitter is not None:
        plan = dataclasses.replace(plan, jitter=args.jitter)
    if args.crash_trials is not None:
        plan = dataclasses.replace(plan, crash_trials=args.crash_trials)
    if args.systems:
        systems = tuple(x.strip() for x in args.systems.split(","))
        if unknown := [x for x in systems if x not in modelbound.SYSTEMS]:
            print(
                f"error: --systems: unknown {', '.join(unknown)} (known: {', '.join(modelbound.SYSTEMS)})",
                file=sys.stderr,
            )
            return 2
        plan = dataclasses.replace(plan, systems=systems)
    if args.caps_rounds is not None:
        plan = dataclasses.replace(plan, caps_rounds=args.caps_rounds)
    if args.settings:
        starts = tuple(x.strip() for x in args.settings.split("|"))
        plan = dataclasses.replace(plan, settings=tuple(k for k in modelbound.CAPS if k.startswith(starts)))
    stem = "model-quick" if args.quick else "model"
    out = args.out or ROOT / "bench" / "out" / f"{stem}.md"
    raw = args.json or (
        ROOT / "bench" / "out" / f"{stem}.json" if args.quick else ROOT / "bench" / "model-results.json"
    )
    results = asyncio.run(runner.run_model(plan))
    results["note"] = args.note
    for path in (out, raw):
        path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=1, sort_keys=True, default=str) + "\n"
    raw.write_text(text)
    results = json.loads(text)  # the report is what the file reproduces
    out.write_text(modelreport.render(results))
    print(f"wrote {out} and {raw} ({results['seconds']:.0f} s)")
    if not args.quick and args.out is None:  # a full run's figures go into BENCHMARKS.md too
        bench_md = ROOT / "BENCHMARKS.md"
        bench_md.write_text(modelreport.merge(bench_md.read_text(), results))
        print(f"updated {bench_md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
