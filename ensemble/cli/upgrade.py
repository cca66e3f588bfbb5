"""`starter.py upgrade-check`: replay a sample of the cluster's recent histories, open and closed,
of every flow against the code about to be deployed; exit 1 naming the first divergence, or the
first run this process cannot read (its payloads encrypted with a key it does not have).

Run it in CI before a rollout, with the new code checked out and TEMPORAL_ADDRESS pointing at the
production cluster (read-only: it lists runs and reads their histories). See docs/deploy.md.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from typing import Any

from temporalio.workflow import NondeterminismError, _Definition

from ensemble.cli.debug import _event_type, describe_event, failure_message, load_workflows, locate, unreadable
from ensemble.runs.sample import histories, sample_runs
from ensemble.runtime import connection as temporal
from ensemble.runtime.converter import data_converter
from ensemble.spec.errors import InputError


@dataclass
class Checked:
    flow: str
    run_id: str
    open: bool
    events: int
    ok: bool
    kind: str | None = None
    event_id: int | None = None
    event_type: str | None = None
    event: str | None = None
    message: str | None = None


async def check(client: Any, workflows: list[type], *, per_flow: int, scan: int, flows: list[str]) -> list[Checked]:
    from temporalio.worker import Replayer  # the SDK's worker package: for replays only

    from ensemble.runtime.telemetry import quiet_runtime

    try:
        replayer = Replayer(workflows=workflows, data_converter=data_converter(), runtime=quiet_runtime())
    except (TypeError, ValueError) as err:
        raise InputError(f"cannot replay against these workflows: {err}") from None
    # the Replayer accepted them, so all are defined; a dynamic workflow (no name) has no type to sample
    names = [name for w in workflows if (name := _Definition.must_from_class(w).name) is not None]
    runs = await sample_runs(client, names, per_flow=per_flow, scan=scan, flows=flows)
    out: list[Checked] = []
    async for run, history in histories(client, runs):
        c = Checked(flow=run.flow, run_id=run.run_id, open=run.open, events=len(history.events), ok=True)
        out.append(c)
        if (why := await unreadable(history, client)) is not None:
            c.ok, c.kind, c.message = False, "unreadable", why
            continue
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        c.ok = result.replay_failure is None
        if result.replay_failure is not None:
            c.message = failure_message(result.replay_failure)
            c.kind = (
                "nondeterminism" if isinstance(result.replay_failure, NondeterminismError) else "workflow task failed"
            )
            event = await locate(replayer, history, c.message)
            if event is not None:
                c.event_id, c.event_type, c.event = event.event_id, _event_type(event), describe_event(event)
    return out


def divergence_line(c: Checked) -> str:
    where = f" at event {c.event_id} {c.event_type} ({c.event})" if c.event_id else ""
    if c.kind == "unreadable":
        return f"flow '{c.flow}' run {c.run_id} ({'open' if c.open else 'closed'}): not replayed, {c.message}"
    return f"flow '{c.flow}' run {c.run_id} ({'open' if c.open else 'closed'}): {c.kind}{where}: {c.message}"


async def cmd_upgrade_check(args: argparse.Namespace) -> int:
    from ensemble.runtime.worker import WORKFLOWS

    if args.sample < 1 or args.scan < 1:
        raise InputError("--sample and --scan must be at least 1")
    workflows = load_workflows(args.workflows) if args.workflows else list(WORKFLOWS)
    client = await temporal.connect(start_server=False)
    checked = await check(client, workflows, per_flow=args.sample, scan=args.scan, flows=args.flow or [])
    bad = [c for c in checked if not c.ok]
    if args.json:
        print(
            json.dumps(
                {
                    "ok": not bad,
                    "checked": [asdict(c) for c in checked],
                    "first_divergence": asdict(bad[0]) if bad else None,
                },
                indent=2,
            )
        )
        return 1 if bad else 0
    per_flow: dict[str, list[Checked]] = {}
    for c in checked:
        per_flow.setdefault(c.flow, []).append(c)
    for flow, items in sorted(per_flow.items()):
        n_open = sum(c.open for c in items)
        diverged = sum(not c.ok and c.kind != "unreadable" for c in items)
        unread = sum(c.kind == "unreadable" for c in items)
        state = "OK      " if not diverged and not unread else "DIVERGED" if diverged else "UNREAD  "
        line = f"{state}  {flow}: {n_open} open, {len(items) - n_open} closed run(s) replayed, {diverged} diverged"
        print(line + (f", {unread} not readable here" if unread else ""))
    for c in bad:
        print(f"          {divergence_line(c)}")
    if not checked:
        print("no runs to check on this namespace (nothing can break)")
    elif bad:
        n_unread = sum(c.kind == "unreadable" for c in bad)
        what = f"{len(bad) - n_unread} of {len(checked)} histories diverge"
        if n_unread:
            what += f", {n_unread} cannot be read here"
        print(f"upgrade blocked: {what}; first: {divergence_line(bad[0])}")
    else:
        print(f"{len(checked)} histories of {len(per_flow)} flow(s) replay on this code: safe to deploy")
    return 1 if bad else 0


def register(sub: Any) -> None:
    s = sub.add_parser(
        "upgrade-check",
        help="replay recent histories of every flow from the cluster against this code; "
        "exit 1 naming the first divergence",
    )
    s.add_argument(
        "--sample",
        type=int,
        default=10,
        metavar="N",
        help="open and closed runs per flow to replay (default 10 of each)",
    )
    s.add_argument(
        "--scan",
        type=int,
        default=1000,
        metavar="N",
        help="at most this many recent runs listed, open and closed each (default 1000)",
    )
    s.add_argument(
        "--flow", action="append", metavar="FLOW", help="only this flow (repeatable; default: every flow with runs)"
    )
    s.add_argument(
        "--workflows",
        metavar="MODULE:CLASS[,...]",
        help="replay against these workflow classes instead of this worker's",
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_upgrade_check)
