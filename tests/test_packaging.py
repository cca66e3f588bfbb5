"""Installing Ensemble claims one top-level name, `ensemble`: a user's own `workflows`,
`activities` and `examples` packages keep working beside it, and bundled flows are found through
the package, not the working directory."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [built] = out.glob("ensemble-*.whl")
    return built


def test_the_wheel_holds_one_top_level_package_with_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"ensemble"}
    for data in (
        "ensemble/examples/approvers.yaml",
        "ensemble/examples/hello/flow.yaml",
        "ensemble/py.typed",
        "ensemble/examples/contract_review/compliance.db",
        "ensemble/examples/document_pipeline/documents/invoice.txt",
        "ensemble/workflows/flow.py",
        "ensemble/activities/llm/loop.py",
    ):
        assert data in names


USER_MAIN = """
import asyncio, workflows, activities
from ensemble import EnsembleClient

async def main():
    ensemble = await EnsembleClient.connect()
    run = await ensemble.start("hello", {"name": "Grace"})
    outcome = await ensemble.wait(run.run_id, until="end", serve=True)
    print(workflows.OWNER, activities.OWNER, outcome.status, outcome.result["greeting"])

asyncio.run(main())
"""


def test_a_project_with_its_own_workflows_and_activities_runs_a_flow(wheel, dev_server, tmp_path, task_queue):
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    project = tmp_path / "project"
    for pkg in ("workflows", "activities"):
        (project / pkg).mkdir(parents=True)
        (project / pkg / "__init__.py").write_text(f"OWNER = 'user-{pkg}'\n")
    (project / "main.py").write_text(USER_MAIN)
    env = dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue, PYTHONPATH=str(site))  # the installed copy, not the checkout
    env.pop("ENSEMBLE_FLOWS")  # the project runs a bundled flow: nothing of the test suite is deployed to it
    result = subprocess.run(
        [sys.executable, "main.py"], cwd=project, env=env, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["user-workflows", "user-activities", "completed", "Hello,", "Grace!"]
    probe = subprocess.run(
        [sys.executable, "-c", "import ensemble.authoring.flows as f; print(f.EXAMPLES_DIR)"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.stdout.strip() == str(site / "ensemble" / "examples")
    assert os.path.isdir(probe.stdout.strip())
