"""Following a run that is still going: waiting for its result, noticing that its work sits
untaken (no live worker serves it), and serving it from this process meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from typing import Any

from temporalio.api.enums.v1 import EventType, PendingActivityState, PendingWorkflowTaskState
from temporalio.client import Client, WorkflowFailureError

from ensemble.authoring.reading import one_line
from ensemble.runs.history import get_run, read_history
from ensemble.runtime import connection, server
from ensemble.spec.errors import EnsembleError


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


@contextlib.asynccontextmanager
async def serving(
    client: Client,
    run_id: str,
    queue: str,
    on_note: Callable[[str], None] | None = None,
    on_broken: Callable[[str], None] | None = None,
) -> AsyncIterator[None]:
    """While the caller waits on a run, make sure some worker serves its task queue: run one in
    this process when nobody polls it, or when the run's work sits untaken (a worker that
    died still shows as a poller for a while). `on_note(text)` hears why one was started.
    An embedded server that dies or breaks meanwhile ends the wait: `on_broken(reason)` is
    called at once (the CLI exits there), else EnsembleError is raised (the run is kept on
    the server). Leaving, the worker drains for at most 30 s and never waits on agent threads
    that will not return."""
    broken: list[str] = []
    async with contextlib.AsyncExitStack() as stack:
        started = False

        async def serve_queue(why: str) -> None:
            nonlocal started
            if on_note:
                on_note(f"{why} on task queue '{queue}'; running a worker in this process until the run ends")
            from ensemble.runtime.worker import build_worker  # the worker's modules, only when this process runs one

            # It serves this one run: the MCP SDK loads if the run calls an MCP tool, not at start.
            worker = build_worker(client, queue, identity=connection.cli_worker_identity(), mcp_at_start=False)
            await stack.enter_async_context(_drained_within(worker, lambda: 0.0 if broken else 30.0))
            started = True

        if not await connection.has_pollers(client, queue):
            await serve_queue("no worker polls")

        async def watchdog() -> None:
            while not started:
                await asyncio.sleep(1.0)
                if await stalled(client, run_id, queue):
                    await serve_queue("the run's work is not being picked up")

        waiting = asyncio.current_task()

        async def sentinel() -> None:  # an embedded server that dies or breaks ends the wait
            while connection.embedded():
                await asyncio.sleep(1.0)
                trouble = await asyncio.to_thread(server.state_problem)
                if trouble:
                    broken.append(trouble)
                    if on_broken is not None:
                        on_broken(f"{one_line(trouble, 1000)}; the run is kept and goes on once the server is back")
                    if waiting is not None:
                        waiting.cancel()
                    return

        tasks = [asyncio.create_task(watchdog()), asyncio.create_task(sentinel())]
        try:
            yield
        except asyncio.CancelledError:
            if broken:
                raise EnsembleError(
                    f"{one_line(broken[0], 1000)}; the run is kept and goes on once the server is back"
                ) from None
            raise
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


@contextlib.asynccontextmanager
async def _drained_within(worker: Any, seconds: Callable[[], float]) -> AsyncIterator[Any]:
    """A worker run for the length of a block; on leaving, it drains for at most `seconds()` (an
    agent thread that never returns must not hold the caller)."""
    from ensemble.activities.threads import THREADS  # imported with the worker already

    await worker.__aenter__()
    try:
        yield worker
    finally:
        drain = asyncio.ensure_future(worker.__aexit__(None, None, None))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds()
        while not drain.done() and loop.time() < deadline:
            state = THREADS.state()
            if state.busy and state.busy == state.stuck:  # only threads that will not return are left
                break
            await asyncio.wait({drain}, timeout=0.2)
        gone = not drain.done() and seconds() <= 0  # its server is gone: nothing to hand back, nothing to wait for
        if not drain.done():
            drain.cancel()
        if not gone:  # a shutdown that waits on a thread may not end even when cancelled: bounded too
            await asyncio.wait({drain}, timeout=5.0)
            if drain.done() and not drain.cancelled():
                drain.exception()  # retrieved: a failed shutdown is not this block's error
