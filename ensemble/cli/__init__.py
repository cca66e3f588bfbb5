"""The command line: `starter.py` (launch and steer runs) and `worker.py` (run them), thin
commands over `ensemble.client`."""

from __future__ import annotations

import os
import sys

from ensemble.cli import app, approvals, audit, codec, debug, dlq, keys, mcp, payloads, serve, server, upgrade

# Every command group beyond the run commands app registers first (cli/runs.py: run, status, result,
# cancel, flows, validate).
GROUPS: tuple[app.Register, ...] = (
    server.register,
    approvals.register,
    keys.register,
    audit.register,
    dlq.register,
    debug.register,
    codec.register,
    upgrade.register,
    serve.register,
    mcp.register,
    payloads.register,
)


def main(argv: list[str] | None = None) -> int:
    """`python starter.py ARGS`; returns the exit code."""
    return app.main(argv, GROUPS)


def worker_main(argv: list[str] | None = None) -> int:
    """`python worker.py ARGS`; returns the exit code. The worker's modules load here, not with the
    starter's commands."""
    from ensemble.cli import worker

    return worker.worker_main(argv)


def _exit(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown, which can abort while Temporal's runtime threads wind down


def run() -> None:
    """The `ensemble` console script: the same commands as `python starter.py`."""
    _exit(main())


def run_worker() -> None:
    """The `ensemble-worker` console script: the same as `python worker.py`."""
    _exit(worker_main())


__all__ = ["GROUPS", "main", "run", "run_worker", "worker_main"]
