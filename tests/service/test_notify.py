"""Notifications (ENSEMBLE_APPROVAL_WEBHOOK) link to the gate's page on the service (ENSEMBLE_SERVICE_URL)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import httpx

from tests.service.conftest import CONTRACT, Service, park, wait_for


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        _Hook.received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


async def test_the_gate_notification_links_to_the_gate_page(service: Service, monkeypatch):
    hook = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    monkeypatch.setenv("ENSEMBLE_APPROVAL_WEBHOOK", f"http://127.0.0.1:{hook.server_port}/hook")
    monkeypatch.setenv("ENSEMBLE_SERVICE_URL", service.url + "/")
    try:
        run_id = await park(service, "contract_review", {"text": CONTRACT})

        async def opened():
            return [e for e in _Hook.received if e["run_id"] == run_id and e["event"] == "opened"]

        [event] = await wait_for(opened, 30)
    finally:
        hook.shutdown()
    assert event["link"] == f"{service.url}/ui/runs/{run_id}?gate=legal"
    async with httpx.AsyncClient() as http:
        page = await http.get(event["link"])
    assert page.status_code == 200 and run_id in page.text and 'data-gate="legal"' in page.text
