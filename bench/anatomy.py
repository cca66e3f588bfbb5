"""`python -m bench.anatomy`: what one model-bound run writes to its history, event by event, for
Ensemble and for the plain-Temporal baseline (bench/modelbaseline.py), side by side.

For each system it runs one 5-step run of the model-bound suite (bench/modelbound.py) against the
loopback model server and prints, per event type, the count and protobuf bytes, then the bytes of
each part of the first activity step: the scheduled input, the user-metadata summary, headers,
payload metadata, and the completed result. `--show` prints the payloads themselves."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType

from bench.modelbound import ModelServerProcess, Systems
from bench.runner import Bench, Plan
from ensemble.runtime.compression import inflate


def _payloads_bytes(payloads: Any) -> tuple[int, int, int]:
    """(total, data, metadata) bytes of a Payloads message."""
    data = sum(len(p.data) for p in payloads.payloads)
    meta = sum(sum(len(k) + len(v) for k, v in p.metadata.items()) for p in payloads.payloads)
    return payloads.ByteSize(), data, meta


def _text(payloads: Any) -> str:
    """The first payload's JSON (inflated where it is compressed)."""
    return inflate(payloads.payloads[0]).data.decode() if payloads.payloads else ""


def anatomy(events: list[Any], steps: int) -> dict[str, Any]:
    by_type: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for e in events:
        row = by_type[EventType.Name(e.event_type).removeprefix("EVENT_TYPE_")]
        row[0] += 1
        row[1] += e.ByteSize()
    first: dict[str, Any] = {}
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED and "scheduled" not in first:
            a = e.activity_task_scheduled_event_attributes
            first["scheduled"] = e.ByteSize()
            first["input"] = _payloads_bytes(a.input)
            first["input_data"] = _text(a.input)
            first["summary"] = e.user_metadata.ByteSize()
            first["header"] = a.header.ByteSize()
            first["retry_policy"] = a.retry_policy.ByteSize()
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED and "completed" not in first:
            a = e.activity_task_completed_event_attributes
            first["completed"] = e.ByteSize()
            first["result"] = _payloads_bytes(a.result)
            first["result_data"] = _text(a.result)
        elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED and "started" not in first:
            first["started"] = e.ByteSize()
            start = e.workflow_execution_started_event_attributes.input
            first["start_input"] = _payloads_bytes(start)
            first["start_data"] = _text(start)
        elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
            first["outcome_data"] = _text(e.workflow_execution_completed_event_attributes.result)
    total = sum(e.ByteSize() for e in events)
    return {"total": total, "per_step": total / steps, "by_type": dict(by_type), "first": first}


def render(name: str, a: dict[str, Any], show: bool) -> str:
    lines = [f"== {name}: {a['total']:,} bytes, {a['per_step']:,.0f} per step"]
    for t, (n, b) in sorted(a["by_type"].items(), key=lambda kv: -kv[1][1]):
        lines.append(f"  {t:<40} {n:>3} events {b:>7,} B")
    f = a["first"]
    lines.append(f"  run start event {f.get('started', 0):,} B (input payloads {f.get('start_input')})")
    lines.append(
        f"  first step: scheduled {f.get('scheduled', 0):,} B = input {f.get('input')} (total, data, metadata)"
        f" + summary {f.get('summary', 0)} + header {f.get('header', 0)} + retry policy {f.get('retry_policy', 0)}"
    )
    lines.append(f"  first step: completed {f.get('completed', 0):,} B = result {f.get('result')}")
    if show:
        lines.append(f"  start:  {f.get('start_data')}")
        lines.append(f"  input:  {f.get('input_data')}")
        lines.append(f"  result: {f.get('result_data')}")
        lines.append(f"  outcome: {f.get('outcome_data')}")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    home = Path(tempfile.mkdtemp(prefix="ensemble-anatomy-"))
    bench = Bench(Plan(mode="quick"), home)
    model = ModelServerProcess(home)
    try:
        srv, client = await bench.server("anatomy")
        env = {"env": model.worker_env()}
        ens = bench.worker(srv, "ensemble", env)
        base = bench.worker(srv, "model_baseline", env)
        sys_ = Systems(
            client, model, home, args.steps, queues={"ensemble": ens.task_queue, "temporal": base.task_queue}
        )
        for system, label in (("ensemble", "Ensemble"), ("temporal", "plain Temporal (baseline)")):
            _, handles = await sys_.batch(system, 1)
            events = list((await handles[0].fetch_history()).events)
            print(render(label, anatomy(events, args.steps), args.show))
    finally:
        model.stop()
        bench.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m bench.anatomy", description=__doc__)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument(
        "--show", action="store_true", help="print the run's input, the first step's input and result, and the outcome"
    )
    asyncio.run(main(p.parse_args()))
