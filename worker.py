"""Run an Ensemble worker: `python worker.py [--task-queue Q] [--activities-only]` (installed: `ensemble-worker`)."""

from ensemble.cli import run_worker

if __name__ == "__main__":
    run_worker()
