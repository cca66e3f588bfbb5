"""The command line: `starter.py` (launch and steer runs) and `worker.py` (run them).

Exit codes: 0 success; 1 the run failed or the request was refused (or the server is
unreachable); 2 usage or input error. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from pydantic import ValidationError

from ensemble.authoring.reading import MAX_DEPTH, one_line
from ensemble.cli import runs
from ensemble.cli.runs import note
from ensemble.runtime import connection as temporal
from ensemble.runtime import logs, server, telemetry
from ensemble.spec.errors import EnsembleError

# A command group: `register(subparsers)` adds parsers that set `fn` (a plain function or a
# coroutine function taking the parsed arguments). `ensemble.cli` lists the groups.
Register = Callable[[argparse._SubParsersAction], None]


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


# ---------------------------------------------------------------- entry points


def build_parser(groups: Sequence[Register] = ()) -> argparse.ArgumentParser:
    p = Parser(prog="starter.py", description="Launch and steer Ensemble runs on Temporal.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    runs.register(sub)  # the commands that start and steer runs come first
    for register in groups:
        register(sub)
    return p


def _agent_threads_busy() -> bool:
    """Whether an in-process worker holds an agent thread (none can if the agents' thread pool
    was never imported in this process)."""
    threads = sys.modules.get("ensemble.activities.threads")
    return threads is not None and threads.THREADS.state().busy


def run_async(coro: Any) -> Any:
    """asyncio.run, except when an in-process worker still holds an agent thread that will not
    return: then the loop is left as it is, unclosed (closing it would cancel the worker's tasks
    and wait for their shutdown, which waits on that thread), and `main` exits the process at once."""
    if not hasattr(asyncio, "Runner"):  # Python 3.10
        return asyncio.run(coro)
    runner = asyncio.Runner()
    try:
        return runner.run(coro)
    finally:
        if not _agent_threads_busy():
            runner.close()


def guard(fn) -> int:
    try:
        result = fn()
        return run_async(result) if asyncio.iscoroutine(result) else result
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
        print(
            f"error: unexpected {type(err).__name__}: {err} (set ENSEMBLE_DEBUG=1 for details)".splitlines()[0],
            file=sys.stderr,
        )
        return 1


def main(argv: list[str] | None = None, groups: Sequence[Register] = ()) -> int:
    args = build_parser(groups).parse_args(argv)
    logs.setup(logging.ERROR if getattr(args, "json", False) else logging.WARNING)
    try:
        code = guard(lambda: _traced(args))
    finally:
        telemetry.flush()
    if _agent_threads_busy():  # an in-process worker's agent thread still running would hold the exit
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _announce(info: server.ServerInfo) -> None:
    note(
        f"started the embedded Temporal server at {info.address} (it was not running; Web UI {info.ui_url}); "
        "`python starter.py server stop` stops it"
    )


def _traced(args: argparse.Namespace) -> Any:
    temporal.on_server_start = _announce
    telemetry.setup_tracing("ensemble-starter")  # OTEL_TRACES_EXPORTER: the run's trace starts here
    return args.fn(args)
