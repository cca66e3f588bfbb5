"""Every run ends: what used to leave a run `running` forever (a workflow task failing again and
again) now completes with large values by reference, or fails at once with its reason."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType

from ensemble.runs.view import describe_run
from tests.conftest import DevServer, running_worker
from tests.flowkit import request, start

pytestmark = pytest.mark.reliability

IMPORTS = "imports: [tests.reliability.agents]\n"


def flow(name: str, steps: str, output: str = "{result: $last}") -> str:
    return f"name: {name}\n{IMPORTS}steps:\n{steps}\noutput: {output}\n"


async def run(dev_server: DevServer, task_queue: str, text: str, run_input, timeout_s: float = 120):
    """Start a run on an in-process worker, wait (bounded) for it to end; its status view, seconds
    taken and the history's size in bytes."""
    from temporalio.client import WorkflowFailureError

    client = dev_server.client
    started = time.monotonic()
    async with running_worker(client, task_queue):
        handle = await start(client, request(text, run_input, task_queue), f"rel-{uuid.uuid4().hex[:8]}")
        try:
            import asyncio

            await asyncio.wait_for(handle.result(), timeout_s)
        except WorkflowFailureError:
            pass
    took = time.monotonic() - started
    view = await describe_run(client, handle.id)
    history = await handle.fetch_history()
    return view, took, len(history.to_json().encode()), history


async def test_outputs_over_two_megabytes_go_by_reference(dev_server: DevServer, task_queue: str, figure) -> None:
    steps = (
        "  - agent: rel_big_output\n    input: {mb: 3}\n    output: last\n"
        "  - agent: rel_measure\n    input: {text: $last.blob}\n    output: last2\n"
    )
    view, took, size, _ = await run(
        dev_server, task_queue, flow("bigout", steps, "{blob: $last.blob, chars: $last2.chars}"), {}
    )
    assert view.status == "completed", view.error
    assert view.steps[-1].output == {"chars": 3 * 2**20}
    figure("3 MiB output + outcome: seconds", f"{took:.1f}")
    figure("history bytes (values stored by reference)", size)
    assert size < 512 * 1024
    assert any((dev_server.home / "payloads").rglob("*")), "nothing was written to the payload store"


async def test_whole_state_after_a_large_input(dev_server: DevServer, task_queue: str) -> None:
    steps = "  - agent: rel_measure\n    input: $\n    output: last\n"
    view, _, _, _ = await run(dev_server, task_queue, flow("wholestate", steps), {"text": "z" * (19 * 2**20 // 10)})
    assert view.status == "completed", view.error


@pytest.mark.parametrize(
    ("agent", "kind", "store"),
    [
        ("rel_unserialisable", "UnserializableOutput", ""),
        ("rel_big_output", "OutputTooLarge", "off"),
        ("rel_huge_error", "RuntimeError", ""),
    ],
)
async def test_permanent_failures_end_the_run_with_a_reason(
    dev_server: DevServer, task_queue: str, monkeypatch: pytest.MonkeyPatch, figure, agent: str, kind: str, store: str
) -> None:
    if store:
        monkeypatch.setenv("ENSEMBLE_PAYLOAD_STORE", store)
    steps = f"  - agent: {agent}\n    input: {{mb: 3}}\n    output: last\n"
    view, took, _, history = await run(dev_server, task_queue, flow(f"perm-{agent}", steps), {}, timeout_s=60)
    assert view.status == "failed", view
    assert view.error and len(view.error) < 20_000, view.error
    failed = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED]
    assert failed, "the agent's failure is in the history"
    info = failed[-1].activity_task_failed_event_attributes.failure
    assert kind in (info.application_failure_info.type, info.message), info.message[:200]
    timeouts = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT]
    assert not timeouts, "reported as a timeout instead of its reason"
    wft_failed = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
    assert not wft_failed
    if kind != "RuntimeError":  # permanent: one attempt, although the agent's policy allows two
        assert view.steps[0].attempts == 1, view.steps[0]
    from ensemble.runs.dlq import dead_letter

    letter = await dead_letter(dev_server.client, view.run_id)  # in the dead-letter queue, with its reason
    assert letter.agent == agent and letter.error and len(letter.error) < 20_000, letter
    figure(f"{agent}: ended failed in (s)", f"{took:.1f}")
    figure(f"{agent}: dead letter", letter.error[:120])
    figure(f"{agent}: attempts", view.steps[0].attempts)


def test_twenty_megabyte_contract_runs_through_contract_review(dev_server: DevServer, tmp_path: Path, figure) -> None:
    from tests.flowkit import run_bundled

    base = (Path(__file__).resolve().parents[2] / "examples" / "contract_review" / "contract.txt").read_text()
    row = "| 2026-01-{d:02d} | service credit ledger | entry {n:07d} | 0.00 EUR | reconciled |\n"
    lines, size, n = [base, "\nSCHEDULE 1 - SERVICE LEDGER\n\n"], len(base), 0
    while size < 20 * 2**20:
        line = row.format(d=n % 28 + 1, n=n)
        lines.append(line)
        size += len(line)
        n += 1
    doc = tmp_path / "contract-20mb.txt"
    doc.write_text("".join(lines))
    started = time.monotonic()
    out = run_bundled(dev_server.env(), "contract_review", doc)
    figure("20 MB contract through contract_review (s)", f"{time.monotonic() - started:.1f}")
    figure("document bytes", doc.stat().st_size)
    assert out["status"] == "completed"
    assert json.dumps(out["result"])  # flagged clauses of the contract itself
