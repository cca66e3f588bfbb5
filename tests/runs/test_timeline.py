"""`status` (times, attempts, output summaries, `--watch`) and `timeline` (SVG and HTML) for real
runs through the CLI; gates and compensations drawn distinctly."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import datetime

import pytest

from ensemble.runs import timeline
from ensemble.spec import RunStatusView, StepRecord
from tests.conftest import ROOT, run_cli, running_worker
from tests.flowkit import request, retried_flow, start

SVG = "{http://www.w3.org/2000/svg}"

FLOW = retried_flow("drawn")


@pytest.fixture
def env(dev_server, task_queue):
    return dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue)


@pytest.fixture
def finished_run(env, tmp_path) -> str:
    """A run of FLOW through the CLI, ended: its flaky step needed two attempts."""
    flow = tmp_path / "drawn.flow.yaml"
    flow.write_text(FLOW)
    result = run_cli(["run", str(flow), "--input", '{"text": "two words"}', "--wait", "--json"], env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["run_id"]


def steps_of(svg: ET.Element) -> list[ET.Element]:
    return [g for g in svg.iter(f"{SVG}g") if "step" in g.get("class", "").split()]


def test_timeline_svg_of_a_run_with_a_retried_agent(env, finished_run, tmp_path):
    out = tmp_path / "run.svg"
    result = run_cli(["timeline", finished_run, "--out", str(out)], env)
    assert result.returncode == 0, result.stderr
    assert f"timeline of run {finished_run} (3 steps, completed)" in result.stdout
    svg = ET.parse(out).getroot()
    assert svg.tag == f"{SVG}svg" and svg.get("data-run") == finished_run
    rows = steps_of(svg)
    assert [g.get("data-agent") for g in rows] == ["shout", "flaky", "count"]
    labels = [g.find(f"{SVG}text[@class='label']").text for g in rows]
    assert labels == ["shout", "flaky", "count"]
    width = float(svg.get("width"))
    bars = {}
    for g in rows:
        [bar] = [r for r in g.iter(f"{SVG}rect") if "bar" in r.get("class", "").split()]
        x, w = float(bar.get("x")), float(bar.get("width"))
        assert 0 < x and w > 0 and x + w <= width
        bars[g.get("data-agent")] = (x, w)
        assert "attempts:" in g.find(f"{SVG}title").text
    assert bars["shout"][0] < bars["flaky"][0] < bars["count"][0]  # in the order they ran
    flaky = rows[1]
    assert flaky.get("data-attempts") == "2"
    [retries] = [r for r in flaky.iter(f"{SVG}rect") if r.get("class") == "retries"]
    assert float(retries.get("x")) + float(retries.get("width")) <= bars["flaky"][0] + 0.01  # before the last attempt
    assert [t.text for t in flaky.iter(f"{SVG}text") if t.get("class") == "attempts"] == ["×2"]
    for g in (rows[0], rows[2]):
        assert g.get("data-attempts") == "1"
        assert not [r for r in g.iter(f"{SVG}rect") if r.get("class") == "retries"]


def test_timeline_html_embeds_the_svg_and_a_step_table(env, finished_run, tmp_path):
    out = tmp_path / "run.html"
    assert run_cli(["timeline", finished_run, "--out", str(out)], env).returncode == 0
    page = out.read_text()
    assert page.startswith("<!doctype html>")
    svg = ET.fromstring(page[page.index("<svg") : page.index("</svg>") + len("</svg>")])
    assert [g.get("data-agent") for g in steps_of(svg)] == ["shout", "flaky", "count"]
    assert page.count("<tr><td>") == 3 and "TWO WORDS" in page


def test_timeline_refuses_bad_arguments_in_one_line(env, tmp_path):
    for args, code, needle in [
        (["timeline", "x", "--out", str(tmp_path / "t.png")], 2, ".svg or .html"),
        (["timeline", "no-such-run", "--out", str(tmp_path / "t.svg")], 1, "no run with id"),
        (["timeline", "x"], 2, "--out"),
    ]:
        result = run_cli(args, env)
        assert result.returncode == code and needle in result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_gates_waits_and_compensations_are_drawn_distinctly():
    t = "2026-01-01T10:00:0{}.000+00:00".format
    view = RunStatusView(
        run_id="r",
        flow="f",
        status="waiting_for_approval",
        started_at=t(0),
        steps=[
            StepRecord(
                name="buy", agent="buyer", status="failed", started_at=t(1), ended_at=t(2), attempts=1, error="refused"
            ),
            StepRecord(
                name="buy.undo",
                agent="refund",
                kind="compensation",
                status="completed",
                started_at=t(2),
                ended_at=t(3),
                attempts=1,
            ),
            StepRecord(name="approve", agent="human", kind="gate", status="waiting", started_at=t(3), attempts=2),
        ],
    )
    svg = ET.fromstring(timeline.render_svg(view, now=datetime.fromisoformat(t(9))))
    rows = {g.get("data-step"): g for g in steps_of(svg)}
    bar = {k: next(r for r in g.iter(f"{SVG}rect") if "bar" in r.get("class", "")) for k, g in rows.items()}
    assert rows["approve"].get("data-kind") == "gate" and "gate" in bar["approve"].get("class").split()
    assert "open" in bar["approve"].get("class").split()  # still waiting: drawn to now
    notes = [x.text for x in rows["approve"].iter(f"{SVG}text") if x.get("class") == "note"]
    assert notes == ["waiting for approval (tier 2)"]
    assert not [x for x in rows["approve"].iter(f"{SVG}text") if x.get("class") == "attempts"]
    assert bar["buy.undo"].get("fill") == "#8a8f96" and rows["buy.undo"].get("data-kind") == "compensation"
    assert bar["buy"].get("fill") == timeline.FILL["failed"]
    fills = {bar[k].get("fill") for k in bar}
    assert len(fills) == 3  # each kind of step in its own colour


def test_status_shows_times_attempts_and_summaries(env, finished_run):
    human = run_cli(["status", finished_run], env)
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert f"run {finished_run} · flow drawn · completed" in lines[0]
    header = next(line for line in lines if "step" in line and "agent" in line)
    for col in ("status", "tries", "start", "end", "ms", "output / error"):
        assert col in header
    row = {line.split("│")[1].strip(): line for line in lines if line.startswith("│")}
    assert "text: TWO WORDS" in row["shout"] and "chars: 9, words: 2" in row["count"]
    cells = [c.strip() for c in row["flaky"].split("│")]
    assert cells[3:5] == ["completed", "2"]
    view = json.loads(run_cli(["status", finished_run, "--json"], env).stdout)
    steps = {s["name"]: s for s in view["steps"]}
    assert steps["shout"]["output"] == {"text": "TWO WORDS"} and steps["shout"]["summary"] == "text: TWO WORDS"
    flaky = steps["flaky"]
    assert flaky["attempts"] == 2 and flaky["started_at"] < flaky["attempt_started_at"] < flaky["ended_at"]


async def test_status_watch_follows_a_run_until_it_ends(dev_server, env, task_queue):
    """Started before any worker polls, the run waits; `status --watch` prints a table, then a
    new one each time the run changes, and exits 0 when it completes."""
    handle = await start(dev_server.client, request(FLOW, {"text": "watch me"}, task_queue))
    watcher = subprocess.Popen(
        [sys.executable, "starter.py", "status", handle.id, "--watch"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        first = []
        for line in watcher.stdout:  # the first table: nothing has run yet
            first.append(line)
            if line.startswith("0 steps"):
                break
        assert first[-1].startswith("0 steps · running · ")
        async with running_worker(dev_server.client, task_queue):
            await handle.result()
            out, err = watcher.communicate(timeout=60)
    finally:
        watcher.kill()
    assert watcher.returncode == 0, err
    progress = [line for line in out.splitlines() if " steps: " in line]
    assert progress and progress[-1].startswith("3 steps: 3 completed · completed")
    assert out.count(f"run {handle.id} · flow") == len(progress)  # one table per change, each with its progress


async def test_status_watch_json_lines_and_failed_run_exit_code(dev_server, env, task_queue):
    failing = "name: broken_run\nimports: [tests.agents]\nsteps: [{agent: broken, input: {}}]\n"
    async with running_worker(dev_server.client, task_queue):
        handle = await start(dev_server.client, request(failing, {}, task_queue))
        result = await asyncio.to_thread(
            run_cli, ["status", handle.id, "--watch", "--json"], env
        )  # the worker keeps running
    assert result.returncode == 1, result.stderr
    views = [json.loads(line) for line in result.stdout.splitlines()]
    assert views[-1]["status"] == "failed" and views[-1]["steps"][0]["attempts"] == 3
    assert "the ledger is unbalanced" in views[-1]["error"]
