"""`run --json` prints one JSON document on stdout and nothing else, even when Temporal's core
runtime warns (here about a payload over 512 KiB, kept inline with the payload store off) while
the CLI's in-process worker serves the run: the warning goes to stderr (shown without --json,
which logs errors only)."""

from __future__ import annotations

import json

from tests.conftest import run_cli


def test_run_json_stdout_is_only_json_when_the_core_warns(dev_server, task_queue, tmp_path):
    env = dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue, ENSEMBLE_PAYLOAD_STORE="off", ENSEMBLE_MAX_INPUT_MB="2")
    name = "x" * (600 * 1024)  # the greeting repeats it: input and output are over the 512 KiB warning size
    (tmp_path / "input.json").write_text(json.dumps({"name": name}))
    result = run_cli(["run", "hello", "--input", f"@{tmp_path / 'input.json'}", "--wait", "--json"], env)
    assert result.returncode == 0, result.stderr[-2000:]
    out = json.loads(result.stdout)  # exactly one document: a stray line after it fails here
    assert out["status"] == "completed" and name in json.dumps(out["result"])
    assert "WARN" not in result.stdout and "TMPRL" not in result.stdout
    assert "TMPRL1103" not in result.stderr  # --json logs errors only


def test_the_core_warning_goes_to_stderr_in_text_mode(dev_server, task_queue, tmp_path):
    env = dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue, ENSEMBLE_PAYLOAD_STORE="off", ENSEMBLE_MAX_INPUT_MB="2")
    (tmp_path / "input.json").write_text(json.dumps({"name": "x" * (600 * 1024)}))
    result = run_cli(["run", "hello", "--input", f"@{tmp_path / 'input.json'}", "--wait"], env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "TMPRL1103" not in result.stdout
    assert "TMPRL1103" in result.stderr  # warnings are shown without --json, on stderr
