"""Commands for failed runs: `dlq list|show|redrive` and `fork` (logic in ensemble/dlq.py).

python starter.py dlq list [--flow FLOW] [--limit N] [--json]
python starter.py dlq show RUN_ID [--json]
python starter.py dlq redrive RUN_ID [--json]
python starter.py fork RUN_ID --from-step STEP [--input JSON | --input @FILE] [--id ID] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ensemble.authoring.flows import LoadedFlow
from ensemble.cli.runs import read_input
from ensemble.client import check_input
from ensemble.runs import dlq
from ensemble.runtime import connection as temporal
from ensemble.spec.errors import InputError


def register(sub: Any) -> None:
    p = sub.add_parser("dlq", help="the dead-letter queue: failed runs, and redriving them")
    actions = p.add_subparsers(dest="dlq_action", required=True)

    s = actions.add_parser("list", help="failed runs that were not redriven, newest first")
    s.add_argument("--flow", help="only runs of this flow")
    s.add_argument("--limit", type=_positive, default=50, help="at most this many (default 50)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_list)

    s = actions.add_parser("show", help="one failed run: failed step, agent, error, attempts, input")
    s.add_argument("run_id")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_show)

    s = actions.add_parser("redrive", help="resume a failed run from its failed step, in a new run")
    s.add_argument("run_id")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_redrive)

    s = sub.add_parser("fork", help="a new run reusing a run's results before STEP, running from STEP on")
    s.add_argument("run_id")
    s.add_argument("--from-step", required=True, metavar="STEP", help="a step's name or path, or its agent's name")
    s.add_argument("--input", help="a different run input: JSON, or @FILE (default: the run's own)")
    s.add_argument("--id", help="the new run's id (default: RUN_ID.fork-<random>)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_fork)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _emit(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


async def _client():
    client = await temporal.connect()
    await temporal.ensure_search_attributes(client)
    return client


async def cmd_list(args: argparse.Namespace) -> int:
    letters = await dlq.dead_letters(await _client(), flow=args.flow, limit=args.limit)
    if args.json:
        _emit([json.loads(json.dumps(letter.brief(), default=str)) for letter in letters])
        return 0
    if not letters:
        print("the dead-letter queue is empty" + (f" for flow '{args.flow}'" if args.flow else ""))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("run", "flow", "failed step", "agent", "attempts", "failed at", "error")
    table.columns[0].no_wrap = True
    for d in letters:
        error = (
            f"REJECTED by {d.rejected['by']}: {d.rejected['why'] or '(no comment)'}" if d.rejected else _short(d.error)
        )
        if d.asked_again_as:
            error += f"; asked again as {d.asked_again_as}"
        table.add_row(
            d.run_id, d.flow, d.failed_step or "?", d.agent or "", str(d.attempts), (d.failed_at or "")[:19], error
        )
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 160))
    console.print(table)
    print(
        f"{len(letters)} failed run(s); `python starter.py dlq show RUN_ID` for details, `dlq redrive RUN_ID` to resume one"
    )
    return 0


async def cmd_show(args: argparse.Namespace) -> int:
    letter = await dlq.dead_letter(await _client(), args.run_id)
    if args.json:
        _emit(dlq.as_json(letter))
        return 0
    rows = [
        ("run", letter.run_id),
        ("flow", letter.flow),
        ("failed step", letter.failed_step or "?"),
        ("agent", letter.agent or "?"),
        ("attempts", letter.attempts),
        ("failed at", letter.failed_at),
        ("error", letter.error),
        ("run input", _short(letter.input, 200)),
        ("step input", _short(letter.step_input, 200) if letter.step_input is not None else "-"),
        ("redrive reuses", ", ".join(letter.completed_steps) or "-"),
    ]
    if letter.rejected:
        r = letter.rejected
        rows.insert(
            2,
            (
                "rejected",
                f"at gate '{r['gate']}' by {r['by']} at {r['at']}: {r['why'] or '(no comment)'} (final: not redriven)",
            ),
        )
        rows.insert(3, ("asked again as", letter.asked_again_as or "- (`run FLOW --again RUN_ID` asks again)"))
    for c in letter.compensations:
        rows.append(
            ("compensation", f"{c['step']}: {c['agent']} {c['status']}" + (f" ({c['error']})" if c["error"] else ""))
        )
    rows.append(
        (
            "redriven as",
            letter.redriven_as or "- (`python starter.py dlq redrive RUN_ID` resumes it from the failed step)",
        )
    )
    for name, value in rows:
        print(f"{name:>14}: {value}")
    return 0


async def cmd_redrive(args: argparse.Namespace) -> int:
    client = await _client()
    new_id, request = await dlq.redrive(client, args.run_id)
    return await _started(
        client, new_id, request, args.json, {"redrive_of": args.run_id}, f"redriving run {args.run_id} as run {new_id}"
    )


async def cmd_fork(args: argparse.Namespace) -> int:
    client = await _client()
    has_input, value = args.input is not None, None
    if has_input:
        record = await dlq.read_run(client, args.run_id)
        flow = LoadedFlow(spec=record.run_request.flow, agents=record.run_request.agents)
        value = read_input(args.input, flow)
        check_input(value, flow)
    if args.id is not None and not args.id.strip():
        raise InputError("--id is empty")
    new_id, request = await dlq.fork(
        client, args.run_id, args.from_step, new_input=value, has_input=has_input, new_id=args.id
    )
    extra = {"fork_of": args.run_id, "from_step": args.from_step}
    return await _started(
        client,
        new_id,
        request,
        args.json,
        extra,
        f"forked run {args.run_id} from step '{args.from_step}' as run {new_id}",
    )


async def _started(client: Any, new_id: str, request: Any, as_json: bool, extra: dict[str, Any], line: str) -> int:
    reused = list(request.reuse)
    if as_json:
        _emit({"run_id": new_id, **extra, "reused": reused})
        return 0
    print(f"{line}; reusing {len(reused)} recorded result(s)" + (f": {', '.join(reused)}" if reused else ""))
    print(f"follow it: python starter.py status {new_id}   (or: python starter.py result {new_id})")
    if not await temporal.has_pollers(client, request.task_queue):
        print("note: no worker polls this run's task queue yet: start one with `python worker.py`", file=sys.stderr)
    return 0
