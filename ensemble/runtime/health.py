"""The worker's health endpoint (`worker.py --health-port N`): `GET /health` on 127.0.0.1.

200 `{"status": "ok", ...}` while every agent thread is free or working within its timeout; 503
with `"degraded"` while some agent thread is stuck past its timeout, `"stuck"` when all are. The
body also holds `slots` (agent threads), `busy` and `stuck`, and, for a worker with adaptive
activity slots (`ENSEMBLE_ACTIVITY_SLOTS=adaptive`), `activity_slots`: per worker the slots held, the floor, the
maximum, the most held at once, the last decision above the floor (`gate`: open, loop late,
threads busy, at maximum) and how often a slot above the floor was deferred for each reason. Served by the standard library's HTTP server on a
daemon thread: one fixed read-only page needs no framework, and it keeps answering while the
worker's event loop is busy.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ensemble.activities import threads
from ensemble.runtime import slots
from ensemble.spec.errors import EnsembleError

HOST = "127.0.0.1"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.split("?")[0] not in ("/health", "/healthz", "/"):
            self.send_error(404)
            return
        state = threads.THREADS.state()
        view = {"status": state.status, "slots": state.slots, "busy": state.busy, "stuck": state.stuck}
        if adaptive := slots.adaptive_view():
            view["activity_slots"] = adaptive
        body = json.dumps(view).encode()
        self.send_response(200 if state.status == "ok" else 503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # probes every few seconds are not news
        pass


class HealthServer:
    def __init__(self, port: int, host: str = HOST) -> None:
        self.host, self.port = host, port
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> HealthServer:
        try:
            self._server = ThreadingHTTPServer((self.host, self.port), _Handler)
        except OSError as err:
            raise EnsembleError(
                f"cannot serve health on {self.host}:{self.port} ({err.strerror or err}); choose another --health-port"
            ) from None
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="ensemble-health", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
