"""Run an Ensemble worker: `python worker.py [--task-queue Q] [--activities-only]`."""

import os
import sys

from ensemble.cli import worker_main

if __name__ == "__main__":
    code = worker_main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown, which can abort while Temporal's runtime threads wind down
