"""Property-based fuzzing of the service from its own OpenAPI document (schemathesis, bounded):
no 5xx, no traceback, errors in their stable shape, and the worker still runs flows afterwards."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.service.conftest import PROCUREMENT, Service, park


async def test_fuzz_the_openapi_document(service: Service, tmp_path: Path):
    from ensemble.service.auth import local_token

    cli = Path(sys.executable).parent / "schemathesis"
    mark = tmp_path / "checks.txt"
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.service.st_hooks",
        "PYTHONPATH": str(ROOT),
        "NO_COLOR": "1",
        "ENSEMBLE_FUZZ_MARK": str(mark),
    }
    run_id = await park(service, "procurement", PROCUREMENT)  # a real run and gate for the paths that name one
    config = tmp_path / "schemathesis.toml"
    config.write_text(f'[parameters]\n"path.run_id" = "{run_id}"\n"path.gate" = "committee"\n')
    proc = await asyncio.create_subprocess_exec(
        str(cli),
        "--config-file",
        str(config),
        "run",
        f"{service.url}/openapi.json",
        "--checks",
        "not_a_server_error,no_traceback,error_shape",
        "--phases",
        "examples,fuzzing",
        "--max-examples",
        "8",
        "--seed",
        "16",
        "--workers",
        "1",
        "--request-timeout",
        "70",
        "--generation-allow-x00",
        "false",
        "-H",
        f"Authorization: Bearer {local_token('ops')}",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 280)
    text = out.decode(errors="replace")
    (tmp_path / "schemathesis.txt").write_text(text)
    print(text[-1500:])
    assert proc.returncode == 0, text[-6000:]
    assert {"no_traceback", "error_shape"} <= set(mark.read_text().split()), "our own checks ran"
    async with service.http("ticketing") as ops:  # the worker is alive (and ops may be rate-limited by now)
        r = await ops.post("/api/runs", json={"flow": "hello", "input": {"name": "after the fuzzing"}})
        assert r.status_code == 201, r.text
        done = await ops.get(f"/api/runs/{r.json()['run_id']}/result", params={"timeout": 60})
        assert done.json()["status"] == "completed", done.text
