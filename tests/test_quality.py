"""The house rules, checked like any behaviour: ruff (lint and format) and mypy are clean, and no
module of the package imports a layer above its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

BIN = Path(sys.executable).parent

# Each layer may import itself and the layers listed after it. The runtime is two layers: worker
# assembly (worker.py, health.py, logs.py), above the workflows and activities it assembles, and
# the infrastructure they use (connection, converter, codec, payloads, telemetry, server...).
LAYERS = [
    "cli",
    "client",
    "runs",
    "assembly",
    "activities",
    "workflows",
    "runtime",
    "identity",
    "authoring",
    "logic",
    "spec",
]
ASSEMBLY = {"ensemble.runtime.worker", "ensemble.runtime.health", "ensemble.runtime.logs"}


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / args[0]), *args[1:]], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_lint_is_clean():
    result = _run("ruff", "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean():
    result = _run("ruff", "format", "--no-cache", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(900)
def test_mypy_is_clean():
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def _layer(path: Path) -> str | None:
    rel = path.relative_to(ROOT)
    top = rel.parts[0]
    if top in ("workflows", "activities"):
        return top
    if top == "ensemble" and len(rel.parts) > 1:
        if ".".join(rel.with_suffix("").parts) in ASSEMBLY:
            return "assembly"
        name = rel.parts[1].removesuffix(".py")
        return name if name in LAYERS else None
    return None


def _target(module: str) -> str:
    return "assembly" if module in ASSEMBLY else module.split(".")[1]


def test_layers_import_only_downward():
    wrong = []
    files = [p for d in ("ensemble", "workflows", "activities") for p in (ROOT / d).rglob("*.py")]
    for path in files:
        if path.relative_to(ROOT).parts[:2] in (
            ("ensemble", "workflows"),
            ("ensemble", "activities"),
            ("ensemble", "examples"),
        ):
            continue  # the links inside ensemble/ are the same files as the top-level folders
        layer = _layer(path)
        if layer is None:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ensemble."):
                target = _target(node.module)
                if target in LAYERS and LAYERS.index(target) < LAYERS.index(layer):
                    wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}: {layer} imports {node.module}")
    assert not wrong, "\n".join(wrong)


def test_a_command_loads_none_of_the_worker_side():
    """A CLI command starts in a second or so because it never imports what only a worker uses (the
    SDK's worker package, the agents' executors and HTTP client, the tracing SDK); they load where
    they are used. Guarded here as a fact about imports, not a time."""
    probe = (
        "import sys, ensemble.cli, ensemble.client; from ensemble.cli import app; "
        "app.build_parser(ensemble.cli.GROUPS); print(' '.join(sorted(sys.modules)))"
    )
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
        ).stdout.split()
    )
    assert "ensemble.cli" in loaded and "temporalio.client" in loaded  # the probe ran
    worker_side = {
        "temporalio.worker",
        "temporalio.contrib.opentelemetry",
        "opentelemetry.sdk.trace",
        "httpx",
        "jsonschema",
        "ensemble.runtime.worker",
        "ensemble.activities.llm",
        "ensemble.activities.http",
        "ensemble.workflows.flow",
    }
    assert not worker_side & loaded, sorted(worker_side & loaded)
