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
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from ensemble.activities import approvals, faults, run_agent
from ensemble.authoring.deploy import load_worker_flows
from ensemble.spec.errors import InputError
from ensemble.runtime.sandbox import sandbox_runner
from ensemble.spec import DEFAULT_TASK_QUEUE
from ensemble.workflows.chat import EnsembleChat
from ensemble.workflows.flow import EnsembleFlow


# Every workflow a worker runs; `starter.py replay` replays histories against these.
WORKFLOWS: tuple[type, ...] = (EnsembleFlow, EnsembleChat)


# Every subpackage of Ensemble but the workflows themselves.
SHARED_MODULES = ("ensemble.spec", "ensemble.logic", "ensemble.authoring", "ensemble.runtime", "ensemble.runs")
# The libraries the update validator checks decision proofs with (ensemble.logic.proofs): pure,
# imported once per process.
PROOF_MODULES = ("jwt", "cryptography")


def default_task_queue() -> str:
    return os.environ.get("ENSEMBLE_TASK_QUEUE") or DEFAULT_TASK_QUEUE


def workflow_runner() -> SandboxedWorkflowRunner:
    """Temporal's workflow sandbox, as ENSEMBLE_SANDBOX says. `trusted` (default) passes
    Ensemble's own workflow modules through the sandbox: they are imported once per process, not
    once per run, which saves about a fifth of the worker's CPU per short run and more than half
    the memory of a cached run. `strict` re-imports them for every run, so the sandbox also checks
    Ensemble's workflow code at run time (the test suite runs that way). Both use the sandbox's
    default restrictions, with its snippets compiled once (`ensemble.sandbox`); see
    docs/performance.md."""
    mode = (os.environ.get("ENSEMBLE_SANDBOX") or "trusted").strip().lower()
    if mode not in ("strict", "trusted"):
        raise InputError(f"ENSEMBLE_SANDBOX={mode!r} is not a sandbox mode: use trusted (the default) or strict")
    # Ensemble's shapes and pure logic are one copy per process in either mode, so a model built
    # inside a run is the same class the worker decodes and encodes.
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*SHARED_MODULES, *PROOF_MODULES)
    if mode == "trusted":
        restrictions = restrictions.with_passthrough_modules("ensemble.workflows")
    return sandbox_runner(restrictions)


def build_worker(
    client: Client,
    task_queue: str,
    *,
    workflows: bool = True,
    activities: bool = True,
    **options: Any,
) -> Worker:
    faults.check()  # a malformed ENSEMBLE_FAULTS stops the worker here, in one line
    if activities:
        load_worker_flows()  # only deployed code runs: what this worker may run, loaded once
    options.setdefault("workflow_runner", workflow_runner())
    return Worker(
        client,
        task_queue=task_queue,
        workflows=list(WORKFLOWS) if workflows else [],
        activities=[run_agent, *approvals.ACTIVITIES] if activities else [],
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
