"""The commands that start and steer runs: `flows`, `validate`, `run`, `status`, `result`,
`cancel`, and how a run's input is read from the command line (`--input JSON` or `@FILE`)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from temporalio.client import Client

from ensemble.authoring.flows import LoadedFlow, all_flows, find_flow, import_flow_modules, load_flow_file
from ensemble.authoring.reading import MAX_DEPTH, decode, parse_json
from ensemble.cli.output import console, emit_json, print_outcome
from ensemble.client import SAME_INPUT, EnsembleClient
from ensemble.runs.history import get_run
from ensemble.runtime import connection as temporal
from ensemble.runtime.payloads import max_input_bytes
from ensemble.spec import RunRequest
from ensemble.spec.errors import InputError


def register(sub: Any) -> None:
    s = sub.add_parser("flows", help="list bundled and registered flows")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_flows)

    s = sub.add_parser("validate", help="check a flow file (without running its code; --import to import it)")
    s.add_argument("file")
    s.add_argument(
        "--import",
        dest="do_import",
        action="store_true",
        help="import the modules and handlers it names, to check them too",
    )
    s.set_defaults(fn=cmd_validate)

    s = sub.add_parser("run", help="start a run of a flow")
    s.add_argument("flow", help="a flow name or a flow file path")
    s.add_argument("--input", help="JSON, or @FILE (.json, or a text document for document flows)")
    s.add_argument("--id", help="the run id (default: FLOW-<random>)")
    s.add_argument(
        "--again",
        metavar="RUN_ID",
        help="ask again after people rejected RUN_ID: a new run with its input (unless --input), that names it",
    )
    s.add_argument(
        "--wait",
        action="store_true",
        help="wait until the run ends or waits for approval (runs a worker in-process if none polls)",
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("status", help="a run's status and steps")
    s.add_argument("run_id")
    s.add_argument("--json", action="store_true")
    s.add_argument(
        "--watch", action="store_true", help="follow the run live until it ends (exit 0 only if it completed)"
    )
    s.set_defaults(fn=cmd_status)

    s = sub.add_parser("result", help="wait for a run's result (or until it waits for approval)")
    s.add_argument("run_id")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_result)

    s = sub.add_parser("cancel", help="cancel a running run (its compensations run)")
    s.add_argument("run_id")
    s.add_argument("--reason", help="why, kept on the run's record")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_cancel)


# ---------------------------------------------------------------- input


def read_input(raw: str | None, flow: LoadedFlow) -> Any:
    """`--input JSON` or `--input @FILE` (a .json file, or a plain-text document for document flows)."""
    if raw is None:
        hint = f" (e.g. --input @{_rel(flow.example_input)})" if flow.example_input else ""
        raise InputError(f"flow '{flow.spec.name}' needs --input JSON or --input @FILE{hint}")
    if not raw.startswith("@"):
        try:
            return json.loads(raw)
        except json.JSONDecodeError as err:
            raise InputError(
                f"--input is not valid JSON ({err.msg} at column {err.colno}); use --input @FILE for a file"
            ) from None
        except RecursionError:
            raise InputError(f"--input is nested too deeply (over {MAX_DEPTH} levels)") from None
    path = Path(raw[1:])
    limit = max_input_bytes()
    try:
        size = path.stat().st_size
        if size > limit:
            raise InputError(
                f"input file {path} is {size / 2**20:.1f} MiB; a run's input must stay under {limit / 2**20:.1f} MiB "
                "(ENSEMBLE_MAX_INPUT_MB, and a payload store: docs/operations.md)"
            )
        text = decode(path.read_bytes(), str(path))
    except OSError as err:
        raise InputError(f"cannot read input file {path}: {err.strerror or err}") from None
    if path.suffix == ".json":
        return parse_json(text, str(path))
    if takes_document(flow):
        return {"text": text, "filename": path.name}
    raise InputError(f"{path} is not a .json file and flow '{flow.spec.name}' does not take a plain-text document")


def takes_document(flow: LoadedFlow) -> bool:
    schema = flow.spec.input_schema
    # a flow the CLI loaded has its 'package.module:Model' schema resolved to a dict
    props = (schema if isinstance(schema, dict) else {}).get("properties", {})
    return "text" in props


def _rel(path: Path | None) -> str:
    if path is None:
        return ""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


# ---------------------------------------------------------------- commands


def cmd_flows(args: argparse.Namespace) -> int:
    flows = all_flows()
    rows: list[dict[str, Any]] = [
        {
            "name": f.spec.name,
            "description": f.spec.description,
            "patterns": f.patterns,
            "agents": f.agent_order,
            "example_input": _rel(f.example_input) or None,
            # the version its runs name (docs/flows.md, "Flow versions")
            "version": f.version,
        }
        for f in flows
    ]
    if args.json:
        emit_json(rows)
        return 0
    from rich.table import Table

    table = Table("flow", "patterns", "agents", "example input", "description")
    table.columns[0].no_wrap = True
    for r in rows:
        table.add_row(
            r["name"], ", ".join(r["patterns"]), " → ".join(r["agents"]), r["example_input"] or "", r["description"]
        )
    console().print(table)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    import_flow_modules()
    if args.do_import:
        print(f"note: importing the modules and handlers {args.file} names (runs their code)")
    try:
        flow = load_flow_file(args.file, trusted=args.do_import)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        for line in err.details[1:]:  # validate is where a person asks for every problem
            print(f"  also: {line}", file=sys.stderr)
        return err.exit_code
    print(f"{args.file}: valid flow '{flow.spec.name}' (agents: {', '.join(flow.agent_order)})")
    for line in flow.unchecked:
        print(f"  not checked: {line}")
    if flow.unchecked:
        print("  (nothing was imported; `validate --import FILE` imports and checks these)")
    return 0


def _agent_queues(request: RunRequest) -> set[str]:
    return {a.task_queue for a in request.agents.values() if a.task_queue} - {request.task_queue}


def note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


def server_broke(reason: str) -> None:
    """The embedded server died or broke while a command waited: one line, and leave now (an
    in-process worker cannot hand anything to a dead server)."""
    print(f"error: {reason}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


# Settings read by whichever worker runs the run: given to the CLI, they apply only to the worker
# the CLI runs in-process, never to a worker that is already running.
WORKER_SETTINGS = (
    "ENSEMBLE_LLM",
    "ENSEMBLE_FAULTS",
    "ENSEMBLE_SANDBOX",
    "ENSEMBLE_APPROVERS",
    "ENSEMBLE_APPROVAL_WEBHOOK",
)


async def warn_worker_settings(client: Client, queue: str) -> None:
    given = [name for name in WORKER_SETTINGS if os.environ.get(name)]
    if given and await temporal.has_pollers(client, queue):
        note(
            f"a worker already polls task queue '{queue}': {', '.join(given)} set here does not apply to it "
            "(set it where that worker runs, and restart the worker)"
        )


async def cmd_run(args: argparse.Namespace) -> int:
    flow = find_flow(args.flow)
    if args.again:  # a new run asking again after a rejected one: its input unless --input is given
        value = read_input(args.input, flow) if args.input is not None else SAME_INPUT
        ensemble = EnsembleClient(await temporal.connect())
        request = await ensemble.again_request(args.again, flow=flow, run_input=value)
    else:
        value = read_input(args.input, flow)
        ensemble = EnsembleClient(await temporal.connect())
        request = ensemble.request(flow, value)  # checked against the flow's schema before connecting further
    await temporal.ensure_search_attributes(ensemble.temporal)
    started = await ensemble.launch(request, run_id=args.id)
    again = request.asks_again
    if not args.wait:
        if args.json:
            emit_json(
                {
                    "run_id": started.run_id,
                    "flow": started.flow,
                    "status": "running",
                    **({"asks_again": again.model_dump()} if again else {}),
                }
            )
        else:
            print(f"started run {started.run_id} of flow '{started.flow}'" + (f"; it {again.line()}" if again else ""))
            if not await temporal.has_pollers(ensemble.temporal, started.task_queue):
                note("no worker polls this run's task queue yet: start one with `python worker.py`")
            else:
                await warn_worker_settings(ensemble.temporal, started.task_queue)
        return 0
    quiet = args.json
    if not quiet:
        await warn_worker_settings(ensemble.temporal, started.task_queue)
        for q in sorted(_agent_queues(request)):
            if not await temporal.has_pollers(ensemble.temporal, q, activities=True):
                note(
                    f"no worker polls task queue '{q}' that some agents need: start `python worker.py --task-queue {q} --activities-only`"
                )
        asks = f"; it {again.line()}" if again else ""
        print(f"started run {started.run_id} of flow '{started.flow}'{asks}; waiting for it to end", file=sys.stderr)
    async with ensemble.serving(
        started.run_id, started.task_queue, on_note=None if quiet else note, on_broken=server_broke
    ):
        outcome = await ensemble.wait(started.run_id)
    return print_outcome(outcome.model_dump(), args.json)


async def cmd_status(args: argparse.Namespace) -> int:
    from ensemble.runs import status

    client = await temporal.connect()
    if args.watch:  # until the run ends; the exit code says how it ended
        view = await status.watch(client, args.run_id, console(), as_json=args.json)
        return 0 if view.status == "completed" else 1
    view = await EnsembleClient(client).status(args.run_id)
    if args.json:
        emit_json(view.model_dump(mode="json"))
    else:
        con = console()
        con.print(status.render(view, width=con.width))
    return 0


async def cmd_result(args: argparse.Namespace) -> int:
    ensemble = EnsembleClient(await temporal.connect())
    _, desc = await get_run(ensemble.temporal, args.run_id)  # a clear error for an unknown run before waiting
    async with ensemble.serving(
        args.run_id, desc.task_queue, on_note=None if args.json else note, on_broken=server_broke
    ):
        outcome = await ensemble.wait(args.run_id)
    return print_outcome(outcome.model_dump(), args.json)


async def cmd_cancel(args: argparse.Namespace) -> int:
    ensemble = EnsembleClient(await temporal.connect())
    await ensemble.cancel(args.run_id, reason=args.reason or "")
    if args.json:
        emit_json({"run_id": args.run_id, "status": "cancel_requested"})
    else:
        print(f"asked run {args.run_id} to cancel; follow it with `python starter.py status {args.run_id}`")
    return 0
