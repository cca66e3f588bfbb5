"""Building and running Ensemble workers.

A worker on the default queue runs the flow workflow and every agent. Agents that name their own
`task_queue` run on workers started for that queue (`python worker.py --task-queue Q
--activities-only`), which hold that agent's credentials or hardware. Scale out by starting more.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Any, Callable

from temporalio.client import Client
from temporalio.worker import Worker

from activities import run_agent
from ensemble.spec import DEFAULT_TASK_QUEUE
from workflows.chat import EnsembleChat
from workflows.flow import EnsembleFlow


def default_task_queue() -> str:
    return os.environ.get("ENSEMBLE_TASK_QUEUE") or DEFAULT_TASK_QUEUE


def build_worker(
    client: Client,
    task_queue: str,
    *,
    workflows: bool = True,
    activities: bool = True,
    **options: Any,
) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[EnsembleFlow, EnsembleChat] if workflows else [],
        activities=[run_agent] if activities else [],
        **options,
    )


async def serve(
    client: Client,
    task_queue: str,
    *,
    workflows: bool = True,
    activities: bool = True,
    on_ready: Callable[[], None] | None = None,
    **options: Any,
) -> None:
    """Run a worker until SIGINT or SIGTERM, then drain it. `on_ready` runs once it polls."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with build_worker(client, task_queue, workflows=workflows, activities=activities, **options):
        if on_ready:
            on_ready()
        await stop.wait()
