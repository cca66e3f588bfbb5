"""A benchmark worker in its own process: `python -m bench.worker --address HOST:PORT
--task-queue Q --kind ensemble|baseline|model_baseline [--options JSON]`.

`ensemble` builds the product's worker (ensemble.runtime.worker.build_worker, its defaults); `baseline`
a plain Temporal worker for the hand-written chain; `model_baseline` one for the model-bound suite's
hand-written workflow (bench/modelflows.py). `--options` are Worker keyword arguments (a `*_timeout` in seconds),
plus `sandbox`: `default` (the product's: ENSEMBLE_SANDBOX, trusted unless set), `sdk` (the same
restrictions in the SDK's own runner, which compiles its sandbox snippets on every call) or `off`
(no sandbox; for comparison only), and `log_level` (default `info`). An `ensemble` worker logs as `python worker.py` does
(to wherever stderr points). Prints `ready` once it polls; stops on SIGTERM or when
its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner


def runner(kind: str) -> Any:
    if kind == "off":
        return UnsandboxedWorkflowRunner()
    if kind == "sdk":
        from ensemble.runtime.worker import workflow_runner

        return SandboxedWorkflowRunner(restrictions=workflow_runner().restrictions)
    return None


def build(client: Client, task_queue: str, kind: str, options: dict[str, Any]) -> Worker:
    options = dict(options)
    for key in [k for k in options if k.endswith("_timeout") and isinstance(options[k], (int, float))]:
        options[key] = timedelta(seconds=options[key])  # JSON has no durations: seconds
    sandbox = runner(options.pop("sandbox", "default"))
    log_level = options.pop("log_level", "info").upper()
    if sandbox is not None:
        options["workflow_runner"] = sandbox
    if kind == "ensemble":
        from ensemble.runtime import logs
        from ensemble.runtime.worker import build_worker, freeze_startup

        logs.setup(getattr(logging, log_level))  # INFO as `python worker.py`: two lines per agent attempt
        # Only deployed code runs: this worker is deployed with the benchmark's agent, as
        # `worker.py --flows bench.agents` would be.
        from bench.agents import agents_block
        from ensemble.authoring.agents import deploy_agent
        from ensemble.spec import AgentSpec

        for spec in agents_block():
            deploy_agent(AgentSpec.model_validate(spec))
        # and with the model-bound suite's flow, as `worker.py --flows FILE` would be: it knows the
        # flow's version, which the suite's runs name (docs/flows.md, "Flow versions")
        from bench.modelflows import model_flow
        from ensemble.authoring.flows import deployed, parse_flow

        deployed(parse_flow(model_flow(), "bench model flow"))

        from bench.server import ensemble_converter

        client = Client(**{**client.config(), "data_converter": ensemble_converter()})
        worker = build_worker(client, task_queue, **options)
        freeze_startup()  # as `python worker.py` (serve) does
        return worker
    if kind == "model_baseline":
        from bench.modelbaseline import ModelBaseline
        from bench.modelflows import model_step

        return Worker(client, task_queue=task_queue, workflows=[ModelBaseline], activities=[model_step], **options)
    from bench.agents import tick_activity
    from bench.baseline import BaselineChain

    return Worker(client, task_queue=task_queue, workflows=[BaselineChain], activities=[tick_activity], **options)


async def main(args: argparse.Namespace) -> None:
    client = await Client.connect(args.address, data_converter=pydantic_data_converter)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(sys.stdin.fileno(), 1024) else None)
    async with build(client, args.task_queue, args.kind, json.loads(args.options)):
        if args.kind == "ensemble":  # as `python worker.py` (serve) does
            from ensemble.runtime.worker import collect_periodically

            collector = asyncio.create_task(collect_periodically())  # noqa: F841 (cancelled at exit)
        print("ready", flush=True)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # nobody reads stdout from here on
        os.dup2(devnull, 2)  # nor stderr: it went to a file while the worker started
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    parser.add_argument("--address", required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--kind", choices=["ensemble", "baseline", "model_baseline"], required=True)
    parser.add_argument("--options", default="{}")
    asyncio.run(main(parser.parse_args()))
    sys.stdout.flush()
    os._exit(0)
