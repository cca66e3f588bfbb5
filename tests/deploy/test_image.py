"""The Dockerfile's recipe, run without a container engine: the files its build stage copies are
copied the same way into an empty directory, built into a wheel and installed on their own (no
network, no index), and the runtime stage's entry scripts run from a directory that holds nothing
else: the package, its workflows and its bundled flows come from the install, not the checkout."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

from tests.conftest import ROOT

DOCKERFILE = (ROOT / "deploy" / "Dockerfile").read_text()


def stages() -> dict[str, str]:
    parts = re.split(r"^FROM \S+ AS (\w+)\s*$", DOCKERFILE, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def copies(stage: str) -> list[list[str]]:
    """`COPY` lines of a stage that copy from the build context: [sources..., destination]."""
    return [
        line.split()[1:] for line in stages()[stage].splitlines() if line.startswith("COPY ") and "--from=" not in line
    ]


def pip(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def test_the_image_recipe_builds_and_its_commands_run_from_the_installed_package(tmp_path):
    src, site, app = tmp_path / "src", tmp_path / "site", tmp_path / "app"
    src.mkdir()
    for *sources, _dest in copies("build"):
        for name in sources:
            path = ROOT / name
            if path.is_dir():
                shutil.copytree(path, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(path, src / name)
    pip("wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path / "wheels"), str(src))
    [wheel] = list((tmp_path / "wheels").glob("ensemble-*.whl"))
    pip("install", "-q", "--no-deps", "--no-index", "--target", str(site), str(wheel))

    app.mkdir()
    scripts = [s for c in copies("runtime") for s in c[:-1] if not s.startswith("--")]
    assert scripts == ["worker.py", "starter.py"]
    for name in scripts:
        shutil.copy2(ROOT / name, app / name)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "ENSEMBLE_", "PYTHON"))}
    env.update(PYTHONPATH=str(site), ENSEMBLE_HOME=str(tmp_path / "home"))

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=app, env=env, capture_output=True, text=True, timeout=120)

    where = run(
        "-c",
        "import ensemble, ensemble.workflows.flow as f, ensemble.examples as e; "
        "print(ensemble.__file__, f.__file__, e.__file__)",
    )
    assert where.returncode == 0, where.stderr
    assert all(p.startswith(str(site)) for p in where.stdout.split()), where.stdout
    for command in (["worker.py", "--help"], ["starter.py", "--help"], ["starter.py", "upgrade-check", "--help"]):
        result = run(*command)
        assert result.returncode == 0 and "usage:" in result.stdout, result.stderr
    flows = run("starter.py", "flows", "--json")
    assert flows.returncode == 0, flows.stderr
    assert {"contract_review", "procurement", "document_pipeline", "customer_enrichment", "hello"} <= {
        f["name"] for f in json.loads(flows.stdout)
    }
