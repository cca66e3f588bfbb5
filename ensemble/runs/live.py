"""Following a run that is still going: waiting for its result, and noticing that its work sits
untaken (no live worker serves it)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from temporalio.api.enums.v1 import EventType, PendingActivityState, PendingWorkflowTaskState
from temporalio.client import Client, WorkflowFailureError

from ensemble.runs.history import get_run, read_history


async def wait_result(client: Client, run_id: str) -> dict[str, Any]:
    """Wait for the run to end: `{run_id, status, result}` (plus `error` when it did not complete)."""
    handle, _ = await get_run(client, run_id)
    try:
        outcome = await handle.result()
    except WorkflowFailureError:
        h = await read_history(client, run_id)
        return {"run_id": run_id, "status": h.status, "result": None, "error": h.error or h.status}
    output = outcome.get("output") if isinstance(outcome, dict) else getattr(outcome, "output", outcome)
    return {"run_id": run_id, "status": "completed", "result": output}


async def stalled(client: Client, run_id: str, task_queue: str, grace_s: float = 3.0) -> bool:
    """Whether the run has work on `task_queue` that no worker has picked up for `grace_s` (a
    workflow task, or an activity attempt of an agent without a queue of its own). Pollers of a
    worker that died stay listed on the server for minutes, so this looks at the run itself."""
    desc = (await client.get_workflow_handle(run_id).describe()).raw_description
    now = datetime.now(timezone.utc)

    def waited(ts: Any) -> float:
        return (now - ts.ToDatetime().replace(tzinfo=timezone.utc)).total_seconds()

    wft = desc.pending_workflow_task
    if (
        desc.HasField("pending_workflow_task")
        and wft.state == PendingWorkflowTaskState.PENDING_WORKFLOW_TASK_STATE_SCHEDULED
    ):
        if waited(wft.scheduled_time) > grace_s:
            return True
    own_queue = await _activities_on(client, run_id, task_queue) if desc.pending_activities else set()
    for act in desc.pending_activities:
        if act.activity_id in own_queue and act.state == PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED:
            ready = act.next_attempt_schedule_time if act.HasField("next_attempt_schedule_time") else act.scheduled_time
            if waited(ready) > grace_s:
                return True
    return False


async def _activities_on(client: Client, run_id: str, task_queue: str) -> set[str]:
    """Activity ids of the run scheduled on `task_queue`."""
    ids = set()
    async for event in client.get_workflow_handle(run_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.task_queue.name == task_queue:
                ids.add(attrs.activity_id)
    return ids
