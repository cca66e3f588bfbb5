"""Every endpoint x {no token, expired, wrong audience, wrong role, right role}: the first three are
401, a caller without the role is 403, and the right caller gets past authorisation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from ensemble.service.auth import local_token
from tests.service.conftest import PROCUREMENT, Service, expired_token, park, wrong_audience_token


@dataclass
class Endpoint:
    method: str
    path: str
    right: str  # a caller with the role, or an approver of the gate
    wrong: str | None  # a signed-in caller without it (None: every signed-in caller may)
    body: Any = None
    ok: tuple[int, ...] = (200,)
    stream: bool = False


ENDPOINTS = [
    Endpoint("GET", "/api/whoami", "carol", None),
    Endpoint("GET", "/api/flows", "carol", None),
    Endpoint("GET", "/api/approvals", "dave", None),
    Endpoint("POST", "/api/runs", "ticketing", "carol", {"flow": "hello", "input": {"name": "Ada"}}, (201,)),
    Endpoint("GET", "/api/runs/{run}", "ops", "carol"),
    Endpoint("GET", "/api/runs/{run}/result?timeout=0", "ops", "carol"),
    Endpoint("POST", "/api/runs/{victim}/cancel", "ops", "alice", {"reason": "matrix"}, (202,)),
    Endpoint("GET", "/api/runs/{run}/gates/committee", "erin", "carol"),
    Endpoint("GET", "/api/runs/{run}/gates/committee/binding", "erin", "alice"),
    Endpoint(
        "POST", "/api/runs/{run}/gates/committee/decision", "dave", "bob", {"decision": "approve", "comment": "ok"}
    ),
    Endpoint("GET", "/api/runs/{run}/decisions", "ops", "carol"),
    Endpoint("GET", "/api/runs/{run}/timeline.svg", "ops", "carol"),
    Endpoint("GET", "/api/runs/{run}/history", "ops", "carol"),
    Endpoint("GET", "/api/runs/{run}/events", "ops", "carol", stream=True),
    Endpoint("GET", "/api/dlq", "ops", "carol"),
    Endpoint("POST", "/api/dlq/{run}/redrive", "ops", "alice", ok=(409,)),  # allowed, and refused: the run did not fail
]
CALLERS = ["no token", "expired", "wrong audience", "wrong role", "right role"]


@pytest.fixture(scope="module")
async def runs(service: Service) -> dict[str, str]:
    return {
        "run": await park(service, "procurement", PROCUREMENT),
        "victim": await park(service, "procurement", PROCUREMENT),
    }


async def call(service: Service, e: Endpoint, token: str | None, runs: dict[str, str]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    path = e.path.format(**runs)
    async with httpx.AsyncClient(base_url=service.url, headers=headers, timeout=90) as http:
        if e.stream:
            async with http.stream(e.method, path) as r:
                await r.aread() if r.status_code != 200 else None
                return r
        return await http.request(e.method, path, json=e.body)


# Every endpoint with every caller, except "wrong role" for an endpoint every signed-in caller may use.
MATRIX = [
    pytest.param(e, caller, id=f"{e.method} {e.path}-{caller}")
    for caller in CALLERS
    for e in ENDPOINTS
    if not (caller == "wrong role" and e.wrong is None)
]


@pytest.mark.parametrize(("e", "caller"), MATRIX)
async def test_authorization_matrix(service: Service, runs, e: Endpoint, caller: str):
    token = {
        "no token": None,
        "expired": expired_token(e.right),
        "wrong audience": wrong_audience_token(e.right),
        "wrong role": local_token(e.wrong) if e.wrong else None,
        "right role": local_token(e.right),
    }[caller]
    r = await call(service, e, token, runs)
    if caller == "right role":
        assert r.status_code in e.ok, r.text if not e.stream else r.status_code
        return
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    if caller == "wrong role":
        assert r.status_code == 403 and body["error"]["code"] == "forbidden", body
        assert e.wrong in body["error"]["message"]
    else:
        assert r.status_code == 401 and body["error"]["code"] == "unauthenticated", body
        assert r.headers["www-authenticate"].startswith("Bearer")
        expected = {"no token": "no bearer token", "expired": "expired", "wrong audience": "audience"}[caller]
        assert expected in body["error"]["message"]


async def test_a_caller_who_may_not_read_cannot_tell_which_runs_exist(service: Service, runs):
    async with service.http("carol") as carol:
        real = await carol.get(f"/api/runs/{runs['run']}")
        missing = await carol.get("/api/runs/no-such-run")
    assert real.status_code == missing.status_code == 403
    assert real.json()["error"]["code"] == missing.json()["error"]["code"] == "forbidden"
