"""The command line: `starter.py` (launch and steer runs) and `worker.py` (run them), thin
commands over `ensemble.client`."""

from ensemble.cli.app import main, worker_main

__all__ = ["main", "run", "run_worker", "worker_main"]


def _exit(code: int) -> None:
    import os
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown, which can abort while Temporal's runtime threads wind down


def run() -> None:
    """The `ensemble` console script: the same commands as `python starter.py`."""
    _exit(main())


def run_worker() -> None:
    """The `ensemble-worker` console script: the same as `python worker.py`."""
    _exit(worker_main())
