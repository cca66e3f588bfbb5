"""What a run's event history says about where a hand-off's time goes.

Server event times and the agents' wall-clock stamps come from the same machine clock, so a
hop from agent i to agent i+1 splits into: the activity's completion reaching the server
(`report`), the server dispatching a workflow task (`to_wft`), the worker's workflow task
(`wft`), the server dispatching the next activity (`to_activity`), and the worker starting it
(`activity_start`)."""

from __future__ import annotations

from typing import Any

from temporalio.api.enums.v1 import EventType

SEGMENTS = ("report", "to_wft", "wft", "to_activity", "activity_start")


def _ns(event: Any) -> int:
    return event.event_time.ToNanoseconds()


def analyse(events: list[Any], ticks: list[dict[str, int]]) -> dict[str, Any]:
    """Workflow-task durations, events per step, and (for standard activities) the split of
    each hand-off, in milliseconds."""
    wfts: list[tuple[int, int]] = []
    started: list[int] = []
    completed: list[int] = []
    pending_wft: int | None = None
    for e in events:
        t = e.event_type
        if t == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            pending_wft = _ns(e)
        elif t == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED and pending_wft is not None:
            wfts.append((pending_wft, _ns(e)))
            pending_wft = None
        elif t == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started.append(_ns(e))
        elif t == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            completed.append(_ns(e))
    size = getattr(events[0], "ByteSize", None) if events else None
    out: dict[str, Any] = {
        "events_per_step": len(events) / max(len(ticks), 1),
        # what the server stores per step: every event, payloads included (protobuf bytes)
        "bytes_per_step": sum(e.ByteSize() for e in events) / max(len(ticks), 1) if size else None,
        "workflow_tasks": len(wfts),
        "wft_ms": [(b - a) / 1e6 for a, b in wfts],
        "split_ms": {s: [] for s in SEGMENTS},
    }
    if len(started) != len(ticks) or len(completed) != len(ticks):
        return out  # local activities: no activity events to split by
    for i in range(len(ticks) - 1):
        wft = next(((a, b) for a, b in wfts if a >= completed[i]), None)
        if wft is None:
            break
        parts = {
            "report": completed[i] - ticks[i]["w1"],
            "to_wft": wft[0] - completed[i],
            "wft": wft[1] - wft[0],
            "to_activity": started[i + 1] - wft[1],
            "activity_start": ticks[i + 1]["w0"] - started[i + 1],
        }
        for key, ns in parts.items():
            out["split_ms"][key].append(ns / 1e6)
    return out
