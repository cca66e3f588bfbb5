"""The service on a free loopback port (uvicorn in the test's event loop) over the dev server, a
worker for its runs, a roles file, and bearer tokens as `starter.py keys token` makes them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from ensemble.client import EnsembleClient
from ensemble.identity import keys
from ensemble.logic.proofs import LOCAL_ISSUER
from ensemble.runtime import server
from ensemble.service import create_app
from ensemble.service.auth import Roles, audience, local_token
from tests.conftest import ROOT, running_worker
from tests.llm_agents import llm_server  # noqa: F401  (the loopback model server fixture)

CONTRACT = (ROOT / "examples/contract_review/contract.txt").read_text()
PROCUREMENT = json.loads((ROOT / "examples/procurement/request.json").read_text())  # a split vote: parks at `committee`

ROLES = """\
users:
  ops: [read, cancel, redrive, "start:*"]
  ticketing: ["start:hello", read]
  alice: [read]
  bob: [read]
  carol: []
"""


@dataclass
class Service:
    url: str
    client: EnsembleClient
    roles_file: Path
    task_queue: str

    def http(self, who: str | None = None, token: str | None = None, **kw) -> httpx.AsyncClient:
        headers = {}
        if who or token:
            headers["Authorization"] = f"Bearer {token or local_token(who)}"
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=httpx.Timeout(90.0), **kw)


def expired_token(who: str) -> str:
    now = int(time.time())
    return keys.sign_claims(
        who,
        {
            "iss": LOCAL_ISSUER,
            "aud": audience(),
            "sub": who,
            "iat": now - 4000,
            "exp": now - 3600,
            "jti": uuid.uuid4().hex,
        },
    )


def wrong_audience_token(who: str) -> str:
    now = int(time.time())
    return keys.sign_claims(
        who, {"iss": LOCAL_ISSUER, "aud": "ensemble", "sub": who, "iat": now, "exp": now + 600, "jti": uuid.uuid4().hex}
    )


@contextlib.asynccontextmanager
async def serving(app) -> AsyncIterator[str]:
    port = server.free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2)
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve())
    deadline = time.monotonic() + 30
    while not srv.started:
        if task.done() or time.monotonic() > deadline:
            raise AssertionError("the service did not start")
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        await asyncio.wait_for(task, 30)


@pytest.fixture(scope="module")
async def service(dev_server, tmp_path_factory) -> AsyncIterator[Service]:
    queue = f"svc-{uuid.uuid4().hex[:10]}"
    roles_file = tmp_path_factory.mktemp("service") / "roles.yaml"
    roles_file.write_text(ROLES)
    keys.init_keys(["ops", "ticketing"])  # service users who approve nothing have local keys too
    mp = pytest.MonkeyPatch()
    mp.setenv("ENSEMBLE_TASK_QUEUE", queue)
    mp.setenv("ENSEMBLE_SERVICE_ROLES", str(roles_file))
    try:
        client = EnsembleClient(dev_server.client)
        async with (
            running_worker(dev_server.client, queue),
            serving(create_app(client, roles=Roles(roles_file))) as url,
        ):
            yield Service(url=url, client=client, roles_file=roles_file, task_queue=queue)
    finally:
        mp.undo()


async def wait_for(check, timeout: float = 60.0, every: float = 0.2):
    """Await `check()` until it returns something truthy (visibility is eventually consistent)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout} s")
        await asyncio.sleep(every)


async def park(svc: Service, flow: str, run_input, run_id: str | None = None) -> str:
    """Start a run as ops and wait until it waits at its gate."""
    async with svc.http("ops") as http:
        r = await http.post(
            "/api/runs", json={"flow": flow, "input": run_input, "run_id": run_id or f"{flow}-{uuid.uuid4().hex[:8]}"}
        )
        assert r.status_code == 201, r.text
        run_id = r.json()["run_id"]
        r = await http.get(f"/api/runs/{run_id}/result", params={"until": "gate", "timeout": 60})
        assert r.json()["status"] == "waiting_for_approval", r.text
    return run_id
