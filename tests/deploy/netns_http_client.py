"""The HTTP client of the multi-host test (run inside one of the test's network namespaces): it
speaks only to the Ensemble service's REST API. It starts the runs (`POST /api/runs`), follows
each on the status endpoint (`GET /api/runs/{id}`) until it ends, then reads through the same
service what each run's output was (`/result`) and who ran what (`/history`, Temporal's JSON), and
writes that to a JSON file.

    python -m tests.deploy.netns_http_client SERVICE_URL TOKEN FLOW LEDGER RUNS HOLD RUN_PREFIX OUT
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ENDED = {"completed", "failed", "canceled", "terminated", "timed_out"}
DEADLINE_S = 180.0


async def ready(http: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if (await http.get("/health")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the service at {http.base_url} did not answer /health within 60 s")
        await asyncio.sleep(0.2)


def facts(history: dict[str, Any]) -> dict[str, Any]:
    """Per step: the attempt that completed and who ran it; who completed each workflow task."""
    steps: dict[str, dict] = {}
    tasks: list[str] = []
    scheduled: dict[str, str] = {}
    for e in history["events"]:
        if "activityTaskScheduledEventAttributes" in e:
            scheduled[str(e["eventId"])] = e["activityTaskScheduledEventAttributes"]["activityId"]
        elif "activityTaskStartedEventAttributes" in e:
            a = e["activityTaskStartedEventAttributes"]
            steps[scheduled[str(a["scheduledEventId"])]] = {"attempt": int(a["attempt"]), "identity": a["identity"]}
        elif "workflowTaskCompletedEventAttributes" in e:
            tasks.append(e["workflowTaskCompletedEventAttributes"]["identity"])
    return {"steps": steps, "workflow_tasks": tasks}


def ok(r: httpx.Response, *codes: int) -> Any:
    if r.status_code not in codes:
        raise SystemExit(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:500]}")
    return r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text


async def main(url: str, token: str, flow: str, ledger: str, runs: int, hold: float, prefix: str, out: str) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=httpx.Timeout(60.0)) as http:
        await ready(http)
        run_ids = []
        for i in range(runs):
            body = {"flow": flow, "input": {"ledger": ledger, "n": i, "hold": hold}, "run_id": f"{prefix}-{i}"}
            run_ids.append(ok(await http.post("/api/runs", json=body), 201)["run_id"])
        Path(out + ".started").write_text("\n".join(run_ids))

        # Follow every run on the status endpoint until it ends (through the cut and the retries).
        status: dict[str, dict] = {}
        pending, deadline = list(run_ids), time.monotonic() + DEADLINE_S
        while pending:
            if time.monotonic() > deadline:
                raise SystemExit(f"{len(pending)} runs still running after {DEADLINE_S:.0f} s: {pending[:5]}")
            for run_id in list(pending):
                view = ok(await http.get(f"/api/runs/{run_id}"), 200)
                if view["status"] in ENDED:
                    status[run_id] = view
                    pending.remove(run_id)
            await asyncio.sleep(0.5)

        report = {}
        for run_id in run_ids:
            view = status[run_id]
            done = view["status"] == "completed"
            outcome = ok(await http.get(f"/api/runs/{run_id}/result", params={"timeout": 30}), 200)
            history = ok(await http.get(f"/api/runs/{run_id}/history"), 200)
            report[run_id] = {
                "ok": done,
                "status": view["status"],
                "output": outcome.get("result") if done else view.get("error") or outcome.get("error"),
                "attempts": {s["name"]: s["attempts"] for s in view["steps"]},
                **facts(history),
            }
    Path(out).write_text(json.dumps(report))


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], a[1], a[2], a[3], int(a[4]), float(a[5]), a[6], a[7]))
