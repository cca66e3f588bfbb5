"""`python worker.py` (the `ensemble-worker` script): a worker for flows and agents, with the
settings that bound what it may run (flows, approvers, keys, environment and egress allow-lists),
its health and metrics endpoints, and Worker Versioning."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ensemble.activities import egress
from ensemble.activities import scrub as secrets
from ensemble.activities.threads import THREADS
from ensemble.cli.app import Parser, guard
from ensemble.runtime import connection as temporal
from ensemble.runtime import logs, telemetry, versioning
from ensemble.runtime.settings import default_task_queue
from ensemble.runtime.worker import serve
from ensemble.spec.errors import EnsembleError


def worker_parser() -> argparse.ArgumentParser:
    p = Parser(prog="worker.py", description="Run an Ensemble worker (flows and agents).")
    p.add_argument("--task-queue", default=None, help="queue to poll (default: $ENSEMBLE_TASK_QUEUE or 'ensemble')")
    p.add_argument("--activities-only", action="store_true", help="run agents only (for agents with their own queue)")
    p.add_argument(
        "--metrics-port", type=int, default=None, metavar="N", help="serve Prometheus metrics on http://HOST:N/metrics"
    )
    p.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="HOST",
        help="address the metrics endpoint binds (default 127.0.0.1)",
    )
    p.add_argument(
        "--health-port",
        type=int,
        default=None,
        metavar="N",
        help="serve http://127.0.0.1:N/health: 200 healthy, 503 degraded",
    )
    p.add_argument(
        "--grace-s",
        type=float,
        default=10.0,
        metavar="S",
        help="on SIGTERM, let running agents finish for S seconds, then exit (default 10)",
    )
    p.add_argument(
        "--env-allow",
        default=None,
        metavar="NAME,...",
        help="environment variables flows may reference as ${env:NAME} (adds to $ENSEMBLE_ENV_ALLOW)",
    )
    p.add_argument(
        "--egress-allow",
        default=None,
        metavar="HOST:PORT,...",
        help="hosts http agents and tools may call (adds to $ENSEMBLE_EGRESS_ALLOW)",
    )
    p.add_argument(
        "--flows",
        action="append",
        default=[],
        metavar="PATH_OR_MODULE",
        help="also run this flow file, directory of flows or module's agents (repeatable; adds to $ENSEMBLE_FLOWS)",
    )
    p.add_argument(
        "--approvers",
        metavar="FILE",
        help="the approvers file (groups) gates resolve against (sets $ENSEMBLE_APPROVERS)",
    )
    p.add_argument(
        "--approver-keys",
        metavar="FILE",
        help="the public keys and identity providers decisions are verified with (sets $ENSEMBLE_APPROVER_KEYS)",
    )
    versioned = "Worker Versioning (docs/deploy.md): "
    p.add_argument(
        "--deployment", metavar="NAME", help=versioned + "the Worker Deployment (default: $ENSEMBLE_DEPLOYMENT)"
    )
    p.add_argument("--build-id", metavar="ID", help=versioned + "this build's id (default: $ENSEMBLE_BUILD_ID)")
    return p


def worker_main(argv: list[str] | None = None) -> int:
    args = worker_parser().parse_args(argv)
    if args.approvers:
        os.environ["ENSEMBLE_APPROVERS"] = str(Path(args.approvers).resolve())
    if args.approver_keys:
        os.environ["ENSEMBLE_APPROVER_KEYS"] = str(Path(args.approver_keys).resolve())
    if args.flows:
        os.environ["ENSEMBLE_FLOWS"] = ",".join(filter(None, [os.environ.get("ENSEMBLE_FLOWS", ""), *args.flows]))
    try:
        level = logs.env_level(logging.INFO)
    except EnsembleError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    logs.setup(level)
    for var, extra in ((secrets.ENV_ALLOW, args.env_allow), (egress.EGRESS_ALLOW, args.egress_allow)):
        if extra:
            os.environ[var] = ",".join(filter(None, (os.environ.get(var, ""), extra)))
    if args.metrics_port:
        egress.protect(f"{args.metrics_host}:{args.metrics_port}")

    async def run() -> int:
        import structlog

        deployment = versioning.deployment_config(args.deployment, args.build_id)  # refused before connecting
        telemetry.setup_tracing("ensemble-worker")
        runtime = telemetry.worker_runtime(args.metrics_port, args.metrics_host)
        client = await temporal.connect(runtime=runtime)
        await temporal.ensure_search_attributes(client)
        queue = args.task_queue or default_task_queue()
        where = f"{client.service_client.config.target_host} (namespace {client.namespace})"
        log = structlog.get_logger("ensemble.worker")
        metrics = f"; metrics on http://{args.metrics_host}:{args.metrics_port}/metrics" if args.metrics_port else ""
        if deployment:
            metrics += f"; version {deployment.version.to_canonical_string()}"
        health = f"; health on http://127.0.0.1:{args.health_port}/health" if args.health_port is not None else ""

        def ready() -> None:
            log.info(
                f"worker polling task queue '{queue}' on {where}{metrics}{health}; Ctrl-C to stop", task_queue=queue
            )

        try:
            stuck_exit_s = float(os.environ.get("ENSEMBLE_STUCK_EXIT_S") or 30)
            code = await serve(
                client,
                queue,
                workflows=not args.activities_only,
                on_ready=ready,
                grace_s=args.grace_s,
                health_port=args.health_port,
                stuck_exit_s=stuck_exit_s,
                deployment_config=deployment,
            )
        finally:
            telemetry.flush()
        if code or THREADS.state().busy:  # threads that never return would hold the interpreter's exit
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return 0

    return guard(run)
