"""The command line: `starter.py` (launch and steer runs) and `worker.py` (run them).

Exit codes: 0 success; 1 the run failed or the request was refused (or the server is
unreachable); 2 usage or input error. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import os
import sys
import uuid
from pathlib import Path
from typing import Any, NoReturn

import jsonschema
from pydantic import ValidationError
from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy

from ensemble.runtime import connection as temporal
from ensemble.runtime import logs
from ensemble.runtime import server
from ensemble.runtime import telemetry
from ensemble.spec.errors import EnsembleError, InputError
from ensemble.authoring.flows import LoadedFlow, all_flows, find_flow, import_flow_modules, load_flow_file
from ensemble.cli.approvals import print_outcome
from ensemble.runs.inbox import settle
from ensemble.runs.history import describe_run, get_run, stalled
from ensemble.runs.status import safe
from ensemble.spec import WORKFLOW_NAME, RunRequest
from ensemble.runtime.worker import build_worker, default_task_queue, serve
from ensemble.activities.threads import THREADS
from ensemble.runtime.payloads import INLINE_LIMIT, max_input_bytes
from ensemble.authoring.reading import MAX_DEPTH, decode, depth_of, one_line, parse_json


# Modules that add subcommands: each has `register(subparsers)` and sets `fn` on its parsers
# (a plain function or a coroutine function taking the parsed arguments).
COMMAND_MODULES: list[str] = ["ensemble.cli.server", "ensemble.cli.approvals", "ensemble.cli.dlq", "ensemble.cli.debug"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _console():
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # piped or captured: wide enough that tables stay readable
        console = Console(width=max(console.width, 140))
    return console


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
            raise InputError(f"--input is not valid JSON ({err.msg} at column {err.colno}); use --input @FILE for a file") from None
        except RecursionError:
            raise InputError(f"--input is nested too deeply (over {MAX_DEPTH} levels)") from None
    path = Path(raw[1:])
    limit = max_input_bytes()
    try:
        size = path.stat().st_size
        if size > limit:
            raise InputError(f"input file {path} is {size / 2**20:.1f} MiB; a run's input must stay under {limit / 2**20:.1f} MiB "
                             "(ENSEMBLE_MAX_INPUT_MB, and a payload store: docs/operations.md)")  # fmt: skip
        text = decode(path.read_bytes(), str(path))
    except OSError as err:
        raise InputError(f"cannot read input file {path}: {err.strerror or err}") from None
    if path.suffix == ".json":
        return parse_json(text, str(path))
    if takes_document(flow):
        return {"text": text, "filename": path.name}
    raise InputError(f"{path} is not a .json file and flow '{flow.spec.name}' does not take a plain-text document")


def takes_document(flow: LoadedFlow) -> bool:
    props = (flow.spec.input_schema or {}).get("properties", {})
    return "text" in props


def check_input(value: Any, flow: LoadedFlow) -> None:
    """Refuse, before a run starts, an input that no worker could carry through the run."""
    if depth_of(value) > MAX_DEPTH:
        raise InputError(f"input is nested more than {MAX_DEPTH} levels deep; flatten it")
    try:
        size = len(json.dumps(value).encode())
    except (TypeError, ValueError, RecursionError) as err:
        raise InputError(f"input cannot be sent as JSON: {one_line(str(err), 200)}") from None
    limit = max_input_bytes()
    if size > limit:
        hint = "" if limit > INLINE_LIMIT else "; configure a payload store (ENSEMBLE_PAYLOAD_STORE, docs/operations.md) to pass large documents by reference"
        raise InputError(f"input is {size / 2**20:.1f} MiB; a run's input must stay under {limit / 2**20:.1f} MiB{hint}")
    if flow.spec.input_schema:
        try:
            jsonschema.validate(value, flow.spec.input_schema)
        except jsonschema.ValidationError as err:
            where = "/".join(str(p) for p in err.absolute_path) or "(root)"
            raise InputError(f"input does not match flow '{flow.spec.name}': at {where}: {err.message}") from None
        except jsonschema.SchemaError as err:
            raise InputError(f"flow '{flow.spec.name}' has an invalid input_schema: {err.message}") from None


def _rel(path: Path | None) -> str:
    if path is None:
        return ""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


# ---------------------------------------------------------------- commands


def cmd_flows(args: argparse.Namespace) -> int:
    flows = all_flows()
    rows = [
        {
            "name": f.spec.name,
            "description": f.spec.description,
            "patterns": f.patterns,
            "agents": f.agent_order,
            "example_input": _rel(f.example_input) or None,
        }
        for f in flows
    ]
    if args.json:
        _emit_json(rows)
        return 0
    from rich.table import Table

    table = Table("flow", "patterns", "agents", "example input", "description")
    table.columns[0].no_wrap = True
    for r in rows:
        table.add_row(r["name"], ", ".join(r["patterns"]), " → ".join(r["agents"]), r["example_input"] or "", r["description"])
    _console().print(table)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    import_flow_modules()
    try:
        flow = load_flow_file(args.file)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        for line in err.details[1:]:  # validate is where a person asks for every problem
            print(f"  also: {line}", file=sys.stderr)
        return err.exit_code
    print(f"{args.file}: valid flow '{flow.spec.name}' (agents: {', '.join(flow.agent_order)})")
    return 0


def _agent_queues(request: RunRequest) -> set[str]:
    return {a.task_queue for a in request.agents.values() if a.task_queue} - {request.task_queue}


@contextlib.asynccontextmanager
async def keep_running(client: Client, run_id: str, queue: str, agent_queues: set[str] = frozenset(), quiet: bool = False):
    """While the caller waits on a run, make sure some worker serves its task queue: start one in
    this process when nobody polls it, or when the run's work sits untaken (a worker that died
    still shows as a poller for a while). Agents with a task queue of their own run only on
    workers started for it (least privilege): this only says when none is polling."""
    for q in sorted(agent_queues):
        if not quiet and not await temporal.has_pollers(client, q, activities=True):
            print(f"note: no worker polls task queue '{q}' that some agents need: start `python worker.py --task-queue {q} --activities-only`", file=sys.stderr)
    async with contextlib.AsyncExitStack() as stack:
        serving = False

        async def serve_queue(why: str) -> None:
            nonlocal serving
            if not quiet:
                print(f"note: {why} on task queue '{queue}'; running a worker in this process until the run ends", file=sys.stderr)
            await stack.enter_async_context(_drained_within(build_worker(client, queue, identity=temporal.cli_worker_identity()), 30.0))
            serving = True

        if not await temporal.has_pollers(client, queue):
            await serve_queue("no worker polls")

        async def watchdog() -> None:
            while not serving:
                await asyncio.sleep(1.0)
                if await stalled(client, run_id, queue):
                    await serve_queue("the run's work is not being picked up")

        broken: list[str] = []
        waiting = asyncio.current_task()

        async def sentinel() -> None:  # an embedded server that dies or breaks ends the wait in one line
            while temporal.embedded():
                await asyncio.sleep(1.0)
                trouble = await asyncio.to_thread(server.state_problem)
                if trouble:
                    broken.append(trouble)
                    if waiting is not None:
                        waiting.cancel()
                    return

        watch, guard = asyncio.create_task(watchdog()), asyncio.create_task(sentinel())
        try:
            yield
        except asyncio.CancelledError:
            if broken:  # an in-process worker cannot hand anything to a dead server: say so and leave now,
                # rather than after its ~10 s of retries (the run is kept on the server)
                print(f"error: {one_line(broken[0], 1000)}; the run is kept and goes on once the server is back", file=sys.stderr)
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(1)
            raise
        finally:
            for task in (watch, guard):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


@contextlib.asynccontextmanager
async def _drained_within(worker: Any, seconds: float):
    """A worker run for the length of a block; on leaving, it drains for at most `seconds` (an
    agent thread that never returns must not hold the command; main() then exits without it)."""
    await worker.__aenter__()
    try:
        yield worker
    finally:
        drain = asyncio.ensure_future(worker.__aexit__(None, None, None))
        deadline = asyncio.get_running_loop().time() + seconds
        while not drain.done() and asyncio.get_running_loop().time() < deadline:
            state = THREADS.state()
            if state.busy and state.busy == state.stuck:  # only threads that will not return are left
                break
            await asyncio.wait({drain}, timeout=0.2)
        if not drain.done():
            drain.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await drain


async def cmd_run(args: argparse.Namespace) -> int:
    flow = find_flow(args.flow)
    value = read_input(args.input, flow)
    check_input(value, flow)
    request = RunRequest(flow=flow.spec, agents=flow.agents, input=value, task_queue=flow.spec.task_queue or default_task_queue())
    client = await temporal.connect()
    await temporal.ensure_search_attributes(client)
    run_id = args.id or f"{flow.spec.name}-{uuid.uuid4().hex[:8]}"
    try:
        with telemetry.run_span(flow.spec.name, run_id):  # the root of the run's trace
            handle = await client.start_workflow(
                WORKFLOW_NAME,
                request,
                id=run_id,
                task_queue=request.task_queue,
                search_attributes=TypedSearchAttributes([SearchAttributePair(temporal.FLOW_ATTRIBUTE, flow.spec.name)]),
                static_summary=f"{flow.spec.name}: {flow.spec.description}"[:200],
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,  # a run id names one run, ever
            )
    except WorkflowAlreadyStartedError:
        raise EnsembleError(f"a run with id '{run_id}' already exists; choose another --id") from None
    if not args.wait:
        if args.json:
            _emit_json({"run_id": handle.id, "flow": flow.spec.name, "status": "running"})
        else:
            print(f"started run {handle.id} of flow '{flow.spec.name}'")
            if not await temporal.has_pollers(client, request.task_queue):
                print("note: no worker polls this run's task queue yet: start one with `python worker.py`", file=sys.stderr)
        return 0
    async with keep_running(client, handle.id, request.task_queue, _agent_queues(request), quiet=args.json):
        if not args.json:
            print(f"started run {handle.id} of flow '{flow.spec.name}'; waiting for it to end", file=sys.stderr)
        outcome = await settle(client, handle)
    return print_outcome(outcome, args.json)


def _print_result(outcome: dict[str, Any], as_json: bool) -> int:
    if as_json:
        _emit_json(outcome)
    else:
        con = _console()
        con.print(f"run [bold]{outcome['run_id']}[/bold]: {outcome['status']}")
        if outcome.get("error"):
            con.print(f"error: {safe(outcome['error'])}", markup=False)
        if outcome.get("result") is not None:
            con.print_json(json.dumps(outcome["result"], default=str))
    return 0 if outcome["status"] == "completed" else 1


async def cmd_status(args: argparse.Namespace) -> int:
    from ensemble.runs import status

    client = await temporal.connect()
    if args.watch:  # until the run ends; the exit code says how it ended
        view = await status.watch(client, args.run_id, _console(), as_json=args.json)
        return 0 if view.status == "completed" else 1
    view = await describe_run(client, args.run_id)
    if args.json:
        _emit_json(view.model_dump(mode="json"))
    else:
        con = _console()
        con.print(status.render(view, width=con.width))
    return 0


async def cmd_result(args: argparse.Namespace) -> int:
    client = await temporal.connect()
    _, desc = await get_run(client, args.run_id)  # a clear error for an unknown run before waiting
    async with keep_running(client, args.run_id, desc.task_queue, quiet=args.json):
        outcome = await settle(client, client.get_workflow_handle(args.run_id))
    return print_outcome(outcome, args.json)


# ---------------------------------------------------------------- entry points


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="starter.py", description="Launch and steer Ensemble runs on Temporal.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("flows", help="list bundled and registered flows")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_flows)

    s = sub.add_parser("validate", help="check a flow file")
    s.add_argument("file")
    s.set_defaults(fn=cmd_validate)

    s = sub.add_parser("run", help="start a run of a flow")
    s.add_argument("flow", help="a flow name or a flow file path")
    s.add_argument("--input", help="JSON, or @FILE (.json, or a text document for document flows)")
    s.add_argument("--id", help="the run id (default: FLOW-<random>)")
    s.add_argument("--wait", action="store_true", help="wait until the run ends or waits for approval (runs a worker in-process if none polls)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("status", help="a run's status and steps")
    s.add_argument("run_id")
    s.add_argument("--json", action="store_true")
    s.add_argument("--watch", action="store_true", help="follow the run live until it ends (exit 0 only if it completed)")
    s.set_defaults(fn=cmd_status)

    s = sub.add_parser("result", help="wait for a run's result (or until it waits for approval)")
    s.add_argument("run_id")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_result)

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return p


def _guard(fn) -> int:
    try:
        result = fn()
        return asyncio.run(result) if asyncio.iscoroutine(result) else result
    except EnsembleError as err:
        print(f"error: {one_line(str(err), 2000)}", file=sys.stderr)
        return err.exit_code
    except ValidationError as err:  # a value given on the command line that a shape refuses
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(value)"
        print(f"error: invalid {where}: {one_line(first['msg'], 300)}", file=sys.stderr)
        return 2
    except RecursionError:
        print(f"error: a value is nested too deeply (over {MAX_DEPTH} levels)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `starter.py ... | head`: the reader left, nothing more to say
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:  # the promise: one line, never a traceback (ENSEMBLE_DEBUG=1 shows it)
        if os.environ.get("ENSEMBLE_DEBUG"):
            raise
        print(f"error: unexpected {type(err).__name__}: {err} (set ENSEMBLE_DEBUG=1 for details)".splitlines()[0], file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(logging.ERROR if getattr(args, "json", False) else logging.WARNING)
    try:
        code = _guard(lambda: _traced(args))
    finally:
        telemetry.flush()
    if THREADS.state().busy:  # an in-process worker's agent thread still running would hold the exit
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _traced(args: argparse.Namespace) -> Any:
    telemetry.setup_tracing("ensemble-starter")  # OTEL_TRACES_EXPORTER: the run's trace starts here
    return args.fn(args)


def worker_main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="worker.py", description="Run an Ensemble worker (flows and agents).")
    p.add_argument("--task-queue", default=None, help="queue to poll (default: $ENSEMBLE_TASK_QUEUE or 'ensemble')")
    p.add_argument("--activities-only", action="store_true", help="run agents only (for agents with their own queue)")
    p.add_argument("--metrics-port", type=int, default=None, metavar="N", help="serve Prometheus metrics on http://HOST:N/metrics")
    p.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST", help="address the metrics endpoint binds (default 127.0.0.1)")
    p.add_argument("--health-port", type=int, default=None, metavar="N", help="serve http://127.0.0.1:N/health: 200 healthy, 503 degraded")
    p.add_argument("--grace-s", type=float, default=10.0, metavar="S", help="on SIGTERM, let running agents finish for S seconds, then exit (default 10)")
    args = p.parse_args(argv)
    logs.setup(logging.INFO)

    async def run() -> int:
        import structlog

        telemetry.setup_tracing("ensemble-worker")
        runtime = telemetry.worker_runtime(args.metrics_port, args.metrics_host)
        client = await temporal.connect(runtime=runtime)
        await temporal.ensure_search_attributes(client)
        queue = args.task_queue or default_task_queue()
        where = f"{client.service_client.config.target_host} (namespace {client.namespace})"
        log = structlog.get_logger("ensemble.worker")
        metrics = f"; metrics on http://{args.metrics_host}:{args.metrics_port}/metrics" if args.metrics_port else ""
        health = f"; health on http://127.0.0.1:{args.health_port}/health" if args.health_port is not None else ""
        ready = lambda: log.info(f"worker polling task queue '{queue}' on {where}{metrics}{health}; Ctrl-C to stop", task_queue=queue)  # noqa: E731
        try:
            stuck_exit_s = float(os.environ.get("ENSEMBLE_STUCK_EXIT_S") or 30)
            code = await serve(client, queue, workflows=not args.activities_only, on_ready=ready, grace_s=args.grace_s,
                               health_port=args.health_port, stuck_exit_s=stuck_exit_s)  # fmt: skip
        finally:
            telemetry.flush()
        if code or THREADS.state().busy:  # threads that never return would hold the interpreter's exit
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return 0

    return _guard(run)
