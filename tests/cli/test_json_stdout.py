"""`run --json` prints one JSON document on stdout and nothing else, even when Temporal's core
runtime warns (here about a payload over 512 KiB, kept inline with the payload store off) while
the CLI's in-process worker serves the run: the warning goes to stderr (shown without --json,
which logs errors only)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli

FLOW = "name: padded\nimports: [tests.cli.big_agents]\nsteps:\n  - agent: padded\n    input: $input\n"
# The run's completion uploads the output about twice (~600 KiB in all): over
# the 512 KiB warning size and under the 1 MiB Temporal takes.
KIB = 300


@pytest.fixture
def padded_run(dev_server, task_queue, tmp_path):
    env = dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue, ENSEMBLE_PAYLOAD_STORE="off")
    flow = tmp_path / "padded.flow.yaml"
    flow.write_text(FLOW)
    return lambda *extra: run_cli(["run", str(flow), "--input", json.dumps({"kib": KIB}), "--wait", *extra], env)


def test_run_json_stdout_is_only_json_when_the_core_warns(padded_run):
    result = padded_run("--json")
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout)  # exactly one document: a stray line before or after it fails here
    assert out["status"] == "completed" and ("x" * KIB * 1024) in json.dumps(out["result"])
    assert "WARN" not in result.stdout and "TMPRL" not in result.stdout
    assert "TMPRL1103" not in result.stderr  # --json logs errors only


def test_the_core_warning_goes_to_stderr_in_text_mode(padded_run):
    result = padded_run()
    assert result.returncode == 0, result.stderr[-2000:]
    assert "TMPRL1103" not in result.stdout
    assert "TMPRL1103" in result.stderr  # warnings are shown without --json, on stderr
