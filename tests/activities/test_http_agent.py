"""`http` agents against a real loopback HTTP service: success, retries, refusals, contracts,
and credentials that never reach the run's history."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError

from ensemble.runs.view import describe_run
from tests.conftest import running_worker
from tests.flowkit import request, start

SECRET = "sk-sentinel-7f3a9c"


class Service:
    """Replies from a script per path: a list of (status, body, headers) consumed in order."""

    def __init__(self) -> None:
        self.script: dict[str, list[tuple[int, Any, dict[str, str]]]] = {}
        self.seen: list[dict[str, Any]] = []

    def handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                service.seen.append({"path": self.path, "body": body, "headers": dict(self.headers)})
                steps = service.script.get(self.path) or [(200, {"echo": body}, {})]
                status, reply, headers = steps.pop(0) if len(steps) > 1 else steps[0]
                data = reply.encode() if isinstance(reply, str) else json.dumps(reply).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def service() -> Iterator[tuple[Service, str]]:
    svc = Service()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), svc.handler())
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield svc, f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def flow(url: str, path: str, **agent: Any) -> dict[str, Any]:
    spec = {
        "name": "crm",
        "kind": "http",
        "url": f"{url}{path}",
        "timeout_s": 5,
        "retry": {"initial_interval_s": 0.1, "max_attempts": 3},
        **agent,
    }
    return {
        "name": "http_flow",
        "agents": [spec],
        "steps": [{"agent": "crm", "input": {"customer": "$input.customer"}}],
    }


async def run(dev_server, task_queue, flow_data, run_input) -> tuple[Any, Any]:
    async with running_worker(dev_server.client, task_queue):
        handle = await start(dev_server.client, request(flow_data, run_input, task_queue))
        try:
            outcome = await handle.result()
        except WorkflowFailureError:
            outcome = None
    return handle, outcome


async def test_posts_input_and_returns_json_with_secret_from_worker_env(dev_server, task_queue, service, monkeypatch):
    svc, url = service
    monkeypatch.setenv("CRM_TOKEN", SECRET)
    monkeypatch.setenv("ENSEMBLE_ENV_ALLOW", "CRM_TOKEN")
    data = flow(url, "/enrich", headers={"Authorization": "Bearer ${env:CRM_TOKEN}"})
    handle, outcome = await run(dev_server, task_queue, data, {"customer": "C-1"})
    assert outcome.output == {"crm": {"echo": {"customer": "C-1"}}}
    [call] = svc.seen
    assert call["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert call["headers"]["X-Ensemble-Run-Id"] == handle.id
    assert call["headers"]["X-Ensemble-Step"] == "crm"
    # Payloads are base64 in the JSON form; the protobuf text form shows their bytes as written.
    history = "\n".join(str(e) for e in (await handle.fetch_history()).events)
    assert SECRET not in history and SECRET not in (await handle.fetch_history()).to_json()
    assert "${env:CRM_TOKEN}" in history


async def test_service_errors_are_retried_honouring_retry_after(dev_server, task_queue, service):
    svc, url = service
    svc.script["/flaky"] = [(503, "busy", {}), (429, "slow down", {"Retry-After": "0"}), (200, {"ok": True}, {})]
    handle, outcome = await run(dev_server, task_queue, flow(url, "/flaky"), {"customer": "C-2"})
    assert outcome.output == {"crm": {"ok": True}}
    [step] = (await describe_run(dev_server.client, handle.id)).steps
    assert step.attempts == 3


async def test_irreversible_http_agents_send_the_same_idempotency_key_on_every_attempt(dev_server, task_queue, service):
    svc, url = service
    svc.script["/charge"] = [(503, "busy", {}), (200, {"charged": True}, {})]
    handle, outcome = await run(
        dev_server, task_queue, flow(url, "/charge", effect="irreversible"), {"customer": "C-3"}
    )
    assert outcome.output == {"crm": {"charged": True}}
    keys = [call["headers"].get("Idempotency-Key") for call in svc.seen]
    assert keys == [f"{handle.id}/crm"] * 2
    svc.seen.clear()
    await run(dev_server, task_queue, flow(url, "/read"), {"customer": "C-3"})
    assert "Idempotency-Key" not in svc.seen[0]["headers"]  # only irreversible agents carry one


@pytest.mark.parametrize(
    "reply, expected",
    [
        ((400, "customer id malformed", {}), "rejected the request (HTTP 400): customer id malformed"),
        ((403, "nope", {}), "refused the credentials (HTTP 403)"),
        ((200, "<html>oops</html>", {}), "replied with something that is not JSON"),
    ],
)
async def test_permanent_failures_are_not_retried(dev_server, task_queue, service, reply, expected):
    svc, url = service
    svc.script["/bad"] = [reply]
    handle, outcome = await run(dev_server, task_queue, flow(url, "/bad"), {"customer": "C-3"})
    assert outcome is None
    view = await describe_run(dev_server.client, handle.id)
    assert view.status == "failed"
    assert expected in view.error
    assert view.steps[0].attempts == 1


async def test_reply_is_checked_against_the_output_schema(dev_server, task_queue, service):
    svc, url = service
    svc.script["/contract"] = [(200, {"score": "high"}, {})]
    schema = {"type": "object", "required": ["score"], "properties": {"score": {"type": "number"}}}
    handle, outcome = await run(
        dev_server, task_queue, flow(url, "/contract", output_schema=schema), {"customer": "C-4"}
    )
    assert outcome is None
    view = await describe_run(dev_server.client, handle.id)
    assert "reply does not match its schema at score: 'high' is not of type 'number'" in view.error


async def test_missing_secret_is_a_clear_permanent_failure(dev_server, task_queue, service, monkeypatch):
    _, url = service
    monkeypatch.delenv("CRM_TOKEN", raising=False)
    monkeypatch.setenv("ENSEMBLE_ENV_ALLOW", "CRM_TOKEN")
    data = flow(url, "/enrich", headers={"Authorization": "Bearer ${env:CRM_TOKEN}"})
    handle, outcome = await run(dev_server, task_queue, data, {"customer": "C-5"})
    assert outcome is None
    assert "the worker's environment has no CRM_TOKEN" in (await describe_run(dev_server.client, handle.id)).error


async def test_unreachable_service_is_retried_then_fails(dev_server, task_queue):
    from ensemble.runtime.server import free_port

    data = flow(f"http://127.0.0.1:{free_port()}", "/gone")
    handle, outcome = await run(dev_server, task_queue, data, {"customer": "C-6"})
    assert outcome is None
    view = await describe_run(dev_server.client, handle.id)
    assert "is unreachable" in view.error
    assert view.steps[0].attempts == 3
