"""The service's REST API against the dev server and a worker, through HTTP only: start (idempotent),
follow live, decide, cancel, result, timeline, history, DLQ; errors in one stable shape."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx

from ensemble.service import create_app
from ensemble.service.auth import Roles, local_token
from tests.service.conftest import CONTRACT, PROCUREMENT, Service, park, serving, wait_for


async def read_events(http: httpx.AsyncClient, run_id: str, sink: list, last_id: str | None = None) -> None:
    """Collect (id, event, data) from the run's SSE stream until `run_ended`."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    async with http.stream("GET", f"/api/runs/{run_id}/events", headers=headers) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        frame: dict = {}
        async for line in r.aiter_lines():
            if not line:
                if "data" in frame:
                    sink.append((frame.get("id"), frame.get("event"), json.loads(frame["data"]), time.monotonic()))
                    if frame.get("event") == "run_ended":
                        return
                frame = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                frame[key] = value


async def test_start_follow_decide_and_complete_through_http(service: Service):
    run_id = f"contract-{uuid.uuid4().hex[:8]}"
    body = {"flow": "contract_review", "input": {"text": CONTRACT}, "run_id": run_id}
    async with service.http("ops") as ops, service.http("alice") as alice, service.http("carol") as carol:
        first = await ops.post("/api/runs", json=body)
        assert first.status_code == 201 and first.json()["created"] is True, first.text
        again = await ops.post("/api/runs", json=body)  # idempotent: the same run
        assert again.status_code == 200 and again.json() == {**first.json(), "created": False}
        other = await ops.post("/api/runs", json={**body, "input": {"text": CONTRACT + " changed"}})
        assert other.status_code == 409 and other.json()["error"]["code"] == "conflict"

        events: list = []
        follower = asyncio.create_task(read_events(alice, run_id, events))
        parked = await ops.get(f"/api/runs/{run_id}/result", params={"until": "gate", "timeout": 60})
        assert parked.json()["status"] == "waiting_for_approval"

        async def in_inbox():
            r = await alice.get("/api/approvals")
            return [g for g in r.json() if g["run_id"] == run_id]

        [row] = await wait_for(in_inbox)
        assert row["gate"] == "legal" and "alice" in row["approvers"]
        gate = (await alice.get(f"/api/runs/{run_id}/gates/legal")).json()
        assert gate["show"], gate  # what the lawyer is asked to decide
        assert not [
            g for g in (await carol.get("/api/approvals")).json() if g["run_id"] == run_id
        ]  # carol's tier is later
        refused = await carol.post(f"/api/runs/{run_id}/gates/legal/decision", json={"decision": "approve"})
        assert refused.status_code == 403 and "carol" in refused.json()["error"]["message"]

        decided = await alice.post(
            f"/api/runs/{run_id}/gates/legal/decision", json={"decision": "approve", "comment": "fine"}
        )
        assert decided.status_code == 200, decided.text
        assert decided.json()["status"] == "approved"
        done = await ops.get(f"/api/runs/{run_id}/result", params={"timeout": 60})
        assert done.json()["status"] == "completed", done.text
        await asyncio.wait_for(follower, 60)

        kinds = [e[1] for e in events]
        for kind in ("step_started", "step_finished", "gate_opened", "decision", "gate_decided", "run_ended"):
            assert kind in kinds, kinds
        assert events[-1][2]["status"] == "completed"
        [decision] = [e[2] for e in events if e[1] == "decision"]
        assert decision["by"] == "alice" and decision["accepted"] is True

        # Resuming after a disconnect: only what came after the last event id seen
        cut = len(events) // 2
        resumed: list = []
        await asyncio.wait_for(read_events(alice, run_id, resumed, last_id=events[cut][0]), 30)
        assert [e[:3] for e in resumed] == [e[:3] for e in events if int(e[0]) > int(events[cut][0])]

        audit = (await ops.get(f"/api/runs/{run_id}/decisions")).json()
        assert audit["ok"] and audit["decisions"][0]["by"] == "alice" and audit["decisions"][0]["verified"]
        svg = await ops.get(f"/api/runs/{run_id}/timeline.svg")
        assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml") and "<svg" in svg.text
        history = await ops.get(f"/api/runs/{run_id}/history")
        assert history.status_code == 200 and json.loads(history.text)["events"][0]["eventType"].endswith("STARTED")
        status = (await ops.get(f"/api/runs/{run_id}")).json()
        assert status["status"] == "completed" and any(s["kind"] == "gate" for s in status["steps"])


async def test_live_events_latency(service: Service):
    """How long after the history records a step a follower hears of it (docs/service.md)."""
    async with service.http("ops") as ops:
        run_id = f"hello-{uuid.uuid4().hex[:8]}"
        events: list = []
        r = await ops.post("/api/runs", json={"flow": "hello", "input": {"name": "Ada"}, "run_id": run_id})
        assert r.status_code == 201
        await asyncio.wait_for(read_events(ops, run_id, events), 60)
    history = [e async for e in service.client.temporal.get_workflow_handle(run_id).fetch_history_events()]
    recorded = {e.event_id: e.event_time.ToDatetime().timestamp() for e in history}
    now_wall, now_mono = time.time(), time.monotonic()
    lags = [(now_wall - (now_mono - mono)) - recorded[int(i)] for i, _, _, mono in events if i]
    lags = sorted(lags)
    median, top = lags[len(lags) // 2] * 1000, lags[-1] * 1000
    print(
        f"\nSSE latency after the history records an event: "
        f"median {median:.0f} ms, max {top:.0f} ms over {len(lags)} events"
    )
    assert lags[-1] < 5.0


async def test_reject_lands_in_the_dlq_and_is_not_redriven(service: Service):
    run_id = await park(service, "contract_review", {"text": CONTRACT})
    async with service.http("ops") as ops, service.http("bob") as bob:
        r = await bob.post(f"/api/runs/{run_id}/gates/legal/decision", json={"decision": "reject", "comment": "no"})
        assert r.status_code == 200, r.text
        done = (await ops.get(f"/api/runs/{run_id}/result", params={"timeout": 60})).json()
        assert done["status"] == "failed"

        async def listed():
            return [
                d
                for d in (await ops.get("/api/dlq", params={"flow": "contract_review"})).json()
                if d["run_id"] == run_id
            ]

        [letter] = await wait_for(listed)
        assert letter["rejected"]["by"] == "bob"
        redrive = await ops.post(f"/api/dlq/{run_id}/redrive")
        assert redrive.status_code == 409 and "reject" in redrive.json()["error"]["message"].lower()
        late = await bob.post(f"/api/runs/{run_id}/gates/legal/decision", json={"decision": "approve"})
        assert late.status_code == 409 and late.json()["error"]["code"] == "refused"


async def test_cancel_a_waiting_run(service: Service):
    async with service.http("ops") as ops:
        run_id = await park(service, "procurement", PROCUREMENT)
        r = await ops.post(f"/api/runs/{run_id}/cancel", json={"reason": "test"})
        assert r.status_code == 202
        done = (await ops.get(f"/api/runs/{run_id}/result", params={"timeout": 60})).json()
        assert done["status"] == "canceled"
        again = await ops.post(f"/api/runs/{run_id}/cancel")
        assert again.status_code == 409 and "only a running run" in again.json()["error"]["message"]


async def test_errors_are_one_line_json_with_the_cli_messages(service: Service):
    async with service.http("ops") as ops:
        missing = await ops.get("/api/runs/no-such-run")
        assert missing.status_code == 404
        assert missing.json() == {
            "error": {"code": "not_found", "message": "no run with id 'no-such-run' in namespace 'default'"}
        }
        bad = await ops.post("/api/runs", json={"flow": "hello", "input": {"nom": 1}})
        assert bad.status_code == 400 and bad.json()["error"]["message"].startswith("input does not match flow 'hello'")
        unknown = await ops.post("/api/runs", json={"flow": "nope", "input": {}})
        assert unknown.status_code in (400, 403) and "nope" in unknown.json()["error"]["message"]
        for path in (
            "examples/hello/flow.yaml",
            "hello.yaml",
            "../hello",
        ):  # a name, never a file on the service's machine
            named = await ops.post("/api/runs", json={"flow": path, "input": {"name": "x"}})
            assert named.status_code in (400, 422) and named.json()["error"]["code"] in (
                "invalid_input",
                "invalid_request",
            )
        from ensemble.runtime.payloads import max_input_bytes

        huge = await ops.post(
            "/api/runs", content=b"x" * (max_input_bytes() * 2), headers={"content-type": "application/json"}
        )
        assert huge.status_code == 413 and huge.json()["error"]["code"] == "too_large"
        shape = await ops.post("/api/runs", content=b"{not json", headers={"content-type": "application/json"})
        assert shape.status_code == 422 and shape.json()["error"]["code"] == "invalid_request"
        flows = (await ops.get("/api/flows")).json()
        assert {"hello", "contract_review", "procurement"} <= {f["name"] for f in flows}
    async with service.http() as anonymous:
        doc = (await anonymous.get("/openapi.json")).json()
        assert doc["openapi"].startswith("3.1")
        page = await anonymous.get("/docs")
        assert (
            page.status_code == 200
            and "/static/app.js" in page.text
            and "http" not in page.text.split("<main>")[1].split("</main>")[0].replace("/openapi.json", "")
        )
        js = await anonymous.get("/static/app.js")
        assert js.status_code == 200 and "https://" not in js.text and "cdn" not in js.text.lower()


async def test_start_and_decide_are_rate_limited(service: Service, monkeypatch):
    monkeypatch.setenv("ENSEMBLE_SERVICE_RATE_START", "2/60")
    monkeypatch.setenv("ENSEMBLE_SERVICE_RATE_DECIDE", "1/60")
    app = create_app(service.client, roles=Roles(service.roles_file))
    async with serving(app) as url:
        headers = {"Authorization": f"Bearer {local_token('ticketing')}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as bot:
            codes = [
                (await bot.post("/api/runs", json={"flow": "hello", "input": {"name": "x"}})).status_code
                for _ in range(3)
            ]
            assert codes == [201, 201, 429]
            last = await bot.post("/api/runs", json={"flow": "hello", "input": {"name": "x"}})
            assert last.json()["error"]["code"] == "rate_limited" and int(last.headers["Retry-After"]) >= 1
        headers = {"Authorization": f"Bearer {local_token('frank')}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as frank:
            first = await frank.post("/api/runs/no-such-run/gates/g/decision", json={"decision": "approve"})
            second = await frank.post("/api/runs/no-such-run/gates/g/decision", json={"decision": "approve"})
            assert (first.status_code, second.status_code) == (404, 429)


async def test_a_quiet_stream_keeps_the_connection_with_comments(service: Service):
    from ensemble.service import events

    run_id = await park(service, "procurement", PROCUREMENT)  # waits at its gate: nothing happens
    frames = []
    stream = events.stream(service.client.temporal, run_id, keepalive_s=0.3)
    try:
        async for text in stream:
            frames.append(text)
            if text == ": keepalive\n\n":
                break
    finally:
        await stream.aclose()
    assert frames[0].startswith(": following run") and any("event: gate_opened" in f for f in frames)


async def test_retries_and_failures_are_followed_live_and_redriven(service: Service):
    import tests.service.agents  # noqa: F401  (registers the agents in this process, where the worker runs)
    from ensemble.runtime.launch import start_request
    from tests.flowkit import request

    flow = {
        "name": "shaky_then_broken",
        "imports": ["tests.service.agents"],
        "steps": [{"agent": "shaky", "input": {}}, {"agent": "service_broken", "input": {}}],
    }
    run_id = f"shaky-{uuid.uuid4().hex[:8]}"
    await start_request(service.client.temporal, request(flow, {}, service.task_queue), run_id, summary="test")
    events: list = []
    async with service.http("ops") as ops:
        await asyncio.wait_for(read_events(ops, run_id, events), 60)
        seen = [(kind, data.get("step"), data.get("attempt") or data.get("status")) for _, kind, data, _ in events]
        assert ("step_retried", "shaky", 3) in seen and ("step_finished", "shaky", "completed") in seen
        assert ("step_retried", "service_broken", 2) in seen and ("step_finished", "service_broken", "failed") in seen
        assert events[-1][1] == "run_ended" and events[-1][2]["status"] == "failed"

        async def listed():
            letters = (await ops.get("/api/dlq", params={"flow": "shaky_then_broken"})).json()
            return [d for d in letters if d["run_id"] == run_id]

        [letter] = await wait_for(listed)
        assert letter["failed_step"] == "service_broken"
        redriven = await ops.post(f"/api/dlq/{run_id}/redrive")
        assert redriven.status_code == 201, redriven.text
        assert redriven.json()["run_id"] == f"{run_id}.redrive-1" and redriven.json()["reused"] == ["shaky"]
        again = await ops.post(f"/api/dlq/{run_id}/redrive")
        assert again.status_code == 409 and "already redriven" in again.json()["error"]["message"]


async def test_model_tokens_are_followed_live(service: Service, llm_server, monkeypatch):
    from ensemble.runtime.launch import start_request
    from tests.flowkit import request
    from tests.llm_agents import answer, llm_flow, use_server

    use_server(monkeypatch, llm_server([answer("billing", 2, usage=(50, 12))]))
    run_id = f"llm-{uuid.uuid4().hex[:8]}"
    flow = llm_flow("openai:test-model")
    await start_request(
        service.client.temporal, request(flow, {"text": "Where is A-7?"}, service.task_queue), run_id, summary="t"
    )
    events: list = []
    async with service.http("ops") as ops:
        await asyncio.wait_for(read_events(ops, run_id, events), 60)
    [tokens] = [data for _, kind, data, _ in events if kind == "tokens"]
    used = (tokens["prompt_tokens"], tokens["completion_tokens"], tokens["total_tokens"])
    assert tokens["step"] == "support" and used == (50, 12, 62)
    assert events[-1][2]["status"] == "completed"
