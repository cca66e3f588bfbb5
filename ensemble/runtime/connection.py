"""Connecting to Temporal: the embedded server by default, any cluster with TEMPORAL_ADDRESS.

Cluster settings come from the environment: TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE (default
`default`), TEMPORAL_API_KEY, TEMPORAL_TLS=true, TEMPORAL_TLS_CERT / TEMPORAL_TLS_KEY (client
certificate), TEMPORAL_TLS_CA (server CA), TEMPORAL_TLS_SERVER_NAME.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from google.protobuf.duration_pb2 import Duration
from temporalio.api.enums.v1 import IndexedValueType, TaskQueueType
from temporalio.api.namespace.v1 import NamespaceConfig
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import (
    DescribeNamespaceRequest,
    DescribeTaskQueueRequest,
    GetSystemInfoRequest,
    UpdateNamespaceRequest,
)
from temporalio.client import Client, TLSConfig
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from ensemble.runtime import server, telemetry
from ensemble.runtime.converter import data_converter
from ensemble.runtime.settings import positive_setting
from ensemble.spec import protocol as attributes
from ensemble.spec.errors import EnsembleError

FLOW_ATTRIBUTE = attributes.FLOW
# Every custom search attribute Ensemble uses, registered wherever it runs.
SEARCH_ATTRIBUTES: dict[str, IndexedValueType.ValueType] = {
    key.name: IndexedValueType.Value(f"INDEXED_VALUE_TYPE_{key.indexed_value_type.name}") for key in attributes.ALL
}


_runtime: Runtime | None = None


def default_runtime() -> Runtime:
    """The process's Temporal runtime when the caller brings none: like the SDK's default (core
    warnings and up), but the core's log lines go through Python logging (the `temporalio.core`
    logger, on stderr with the CLI's logging) instead of straight to stdout, where a warning such
    as a payload over 512 KiB (TMPRL1103) would land after `--json` output. Made once per process."""
    global _runtime
    if _runtime is None:
        _runtime = telemetry.worker_runtime()
    return _runtime


# How long a process that used Temporal waits at exit before the interpreter tears down.
# The SDK's Rust threads hand each call's result to Python and then release what the call held
# (its contextvars, its event loop) on their own thread; a short program whose last line is a call
# can reach interpreter teardown while one still does, and the process then aborts (SIGABRT or
# SIGSEGV, "PyGILState_Release: thread state ... must be current") after it has done everything
# it was asked to: the SDK's open issue sdk-python#300. Sleeping releases the GIL, those threads
# finish, and teardown then finds them idle. 50 ms took the aborts from 11 in 40 exits of a
# 2-core machine kept busy to none in 40 (tests/runtime/test_exit.py fails without it); the CLI
# and workers skip teardown altogether (`os._exit`).
EXIT_SETTLE_S = 0.05
_settle_registered = False


def settle_at_exit() -> None:
    """Make this process wait EXIT_SETTLE_S at exit (once, however many clients it connects)."""
    global _settle_registered
    if not _settle_registered:
        atexit.register(time.sleep, EXIT_SETTLE_S)
        _settle_registered = True


# Told when `connect` starts the embedded server because it was not running (the CLI says so on
# stderr: a server that was stopped on purpose should not come back silently).
on_server_start: Callable[[server.ServerInfo], None] | None = None


def embedded() -> bool:
    return not os.environ.get("TEMPORAL_ADDRESS")


def namespace() -> str:
    return os.environ.get("TEMPORAL_NAMESPACE") or "default"


RETENTION_ENV = "ENSEMBLE_RETENTION_DAYS"
DEFAULT_RETENTION_DAYS = 30


def retention_days() -> int:
    """Days the embedded server keeps a closed run (ENSEMBLE_RETENTION_DAYS, 30 by default)."""
    return positive_setting(RETENTION_ENV, DEFAULT_RETENTION_DAYS, "days to keep closed runs")


async def keep_closed_runs(client: Client, days: int) -> None:
    """Set the namespace's retention to `days` unless it is already that. Temporal deletes a closed
    run's history (its result, its decisions and their audit, what replay reads) once its namespace's
    retention has passed since it closed; `temporal server start-dev` creates `default` with one day."""
    ns = await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=client.namespace))
    if ns.config.workflow_execution_retention_ttl.ToTimedelta() == timedelta(days=days):
        return
    ttl = Duration()
    ttl.FromTimedelta(timedelta(days=days))
    await client.workflow_service.update_namespace(
        UpdateNamespaceRequest(namespace=client.namespace, config=NamespaceConfig(workflow_execution_retention_ttl=ttl))
    )


def _tls() -> TLSConfig | bool:
    def read(var: str) -> bytes | None:
        path = os.environ.get(var)
        return Path(path).read_bytes() if path else None

    cert, key, ca = read("TEMPORAL_TLS_CERT"), read("TEMPORAL_TLS_KEY"), read("TEMPORAL_TLS_CA")
    if cert or key or ca or os.environ.get("TEMPORAL_TLS_SERVER_NAME"):
        return TLSConfig(
            client_cert=cert,
            client_private_key=key,
            server_root_ca_cert=ca,
            domain=os.environ.get("TEMPORAL_TLS_SERVER_NAME"),
        )
    flag = os.environ.get("TEMPORAL_TLS", "").lower() in ("1", "true", "yes")
    return flag or bool(os.environ.get("TEMPORAL_API_KEY"))


async def connect(*, start_server: bool = True, wait_s: float = 30.0, runtime: Runtime | None = None) -> Client:
    """A client for the configured Temporal. With no TEMPORAL_ADDRESS the embedded server is
    used, started first when `start_server` (and left running). `runtime` carries metrics
    settings (see telemetry.worker_runtime), else `default_runtime()`; tracing plugins are added
    when tracing is on."""
    info: server.ServerInfo | None = None
    tls: TLSConfig | bool
    keep_days = retention_days() if embedded() else None  # a bad value is one line before anything starts
    if embedded():
        was_running = server.running() is not None
        info = server.start() if start_server else server.running()  # start() refuses a broken state directory
        if info is not None and not was_running and on_server_start is not None:
            on_server_start(info)
        if info is None:
            raise EnsembleError(
                "the embedded Temporal server is not running: start it with `python starter.py server start`"
            )
        address, tls, api_key = info.address, False, None
    else:
        address, tls, api_key = os.environ["TEMPORAL_ADDRESS"], _tls(), os.environ.get("TEMPORAL_API_KEY")
    settle_at_exit()
    loop = asyncio.get_running_loop()
    # a server this process just started may take a while; one already running answers at once or is broken
    deadline = loop.time() + (wait_s if embedded() and info is not None and info.pid in server.STARTED else 5.0)
    while True:
        try:
            client = await asyncio.wait_for(
                Client.connect(
                    address,
                    namespace=namespace(),
                    tls=tls,
                    api_key=api_key,
                    data_converter=data_converter(),
                    runtime=runtime or default_runtime(),
                    plugins=telemetry.plugins(),
                ),
                max(1.0, deadline - loop.time()),
            )  # a server that accepts but never answers is not waited on forever
            await asyncio.wait_for(
                client.workflow_service.get_system_info(GetSystemInfoRequest()), max(1.0, deadline - loop.time())
            )
            if keep_days is not None:  # the embedded server; a cluster's retention is its operators'
                await asyncio.wait_for(keep_closed_runs(client, keep_days), max(1.0, deadline - loop.time()))
            return client
        except (RuntimeError, RPCError, asyncio.TimeoutError) as err:
            if loop.time() > deadline:
                hint = (
                    "check TEMPORAL_ADDRESS, TEMPORAL_API_KEY and the TEMPORAL_TLS_* settings"
                    if not embedded()
                    else f"see {server.state_dir() / 'server.log'}"
                )
                raise EnsembleError(f"cannot reach Temporal at {address} ({_first_line(err)}); {hint}") from None
            await asyncio.sleep(0.25)


def _first_line(err: BaseException) -> str:
    text = str(err) or ("timed out" if isinstance(err, asyncio.TimeoutError) else "")
    for needle, plain in (
        ("Connection refused", "connection refused"),
        ("dns error", "unknown host"),
        ("timed out", "timed out"),
        ("UnknownIssuer", "the server's TLS certificate is not signed by a trusted CA: set TEMPORAL_TLS_CA"),
        ("NotValidForName", "the server's TLS certificate is for another name: set TEMPORAL_TLS_SERVER_NAME"),
        ("InvalidCertificate", "the server's TLS certificate is invalid"),
        ("CertificateRequired", "the server requires a client certificate: set TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY"),
        (
            "invalid compression",
            "the server refused this client: its client certificate or API key is missing or not accepted",
        ),
        ("H2NotNegotiated", "the server did not negotiate HTTP/2 over TLS (not a gRPC endpoint?)"),
        ("h2 protocol error", "the server closed the connection (does it need TLS? set TEMPORAL_TLS=true)"),
        ("operation was canceled", "the server closed the connection (does it need TLS? set TEMPORAL_TLS=true)"),
        ("HandshakeFailure", "the TLS handshake failed"),
        ("InvalidContentType", "the server does not speak TLS: unset TEMPORAL_TLS and TEMPORAL_TLS_*"),
    ):
        if needle.lower() in text.lower():
            return plain
    lines = text.strip().splitlines()
    return lines[0][:160] if lines else type(err).__name__


async def ensure_search_attributes(client: Client) -> None:
    """Register Ensemble's search attributes on the namespace if they are missing."""
    ops = client.operator_service
    try:
        have = await ops.list_search_attributes(ListSearchAttributesRequest(namespace=client.namespace))
        missing = {k: v for k, v in SEARCH_ATTRIBUTES.items() if k not in have.custom_attributes}
        if missing:
            await ops.add_search_attributes(
                AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
            )
    except RPCError as err:
        if err.status == RPCStatusCode.PERMISSION_DENIED:
            raise EnsembleError(
                f"no permission to register search attributes {sorted(SEARCH_ATTRIBUTES)} on namespace "
                f"'{client.namespace}': ask an operator to add them ({_wanted()})"
            ) from None
        if err.status != RPCStatusCode.ALREADY_EXISTS:
            raise EnsembleError(f"cannot register search attributes: {_first_line(err)}") from None


def _wanted() -> str:
    return ", ".join(f"{k.name} {k.indexed_value_type.name.title().replace('_', '')}" for k in attributes.ALL)


CLI_WORKER_PREFIX = "ensemble-cli:"


def cli_worker_identity() -> str:
    """The identity of a worker the CLI runs in-process while it waits on a run."""
    return f"{CLI_WORKER_PREFIX}{os.getpid()}@{socket.gethostname()}"


def _dead_cli_worker(identity: str) -> bool:
    if not identity.startswith(CLI_WORKER_PREFIX):
        return False
    pid, _, host = identity[len(CLI_WORKER_PREFIX) :].partition("@")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


async def has_pollers(client: Client, task_queue: str, *, activities: bool = False) -> bool:
    """Whether any worker polls this task queue for workflow (or activity) tasks, ignoring the
    CLI's own in-process workers that have exited: the server lists pollers for minutes after."""
    kind = TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY if activities else TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW
    resp = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace, task_queue=TaskQueue(name=task_queue), task_queue_type=kind
        )
    )
    return any(not _dead_cli_worker(p.identity) for p in resp.pollers)
