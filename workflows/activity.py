"""How a flow runs an agent: as an activity whose type is the agent's name (or a local activity
for a `fast` agent), with the agent's timeouts and retry policy and a compact input. Every pattern
calls agents through `execute_agent`. Deterministic: only `workflow.*` APIs, no I/O."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

with workflow.unsafe.imports_passed_through():
    from ensemble.spec import AgentCall, AgentResult, AgentSpec


def retry_policy(agent: AgentSpec) -> RetryPolicy:
    r = agent.retry
    return RetryPolicy(
        initial_interval=timedelta(seconds=r.initial_interval_s),
        backoff_coefficient=r.backoff_coefficient,
        maximum_interval=timedelta(seconds=r.max_interval_s),
        maximum_attempts=r.max_attempts,
        non_retryable_error_types=list(r.non_retryable_errors),
    )


def step_summary(agent: str, activity_id: str) -> str | None:
    """What the Web UI shows for an agent step: `AGENT · step PATH`; none where the step is named
    after its agent (the activity type, which the Web UI shows, says it all)."""
    path = activity_id.split("#")[0]
    return None if path == agent else f"{agent} · step {path}"


async def execute_agent(agent: AgentSpec, call: AgentCall, activity_id: str, task_queue: str) -> AgentResult:
    """Run an agent as an activity whose type is its name, with its timeouts and retry policy,
    on its own task queue if it names one. Every pattern calls agents through here.

    A `fast` agent runs as a local activity on this worker instead: no task queue round trip, and
    its result is recorded as a marker when the workflow task completes (docs/performance.md).

    The input is sent compact (`AgentCall.to_wire`: what the activity cannot learn from its own
    info, fields at their defaults left out) and names the agent's spec by its digest: every
    workflow that calls agents holds their specs in its own input (a flow run's request, a chat's
    input), which the worker reads once per spec (activities/specs.py). It changes the payload, not
    the command."""
    wire = call.to_wire(activity_id, workflow.info().workflow_id, by_digest=True)
    if agent.fast:
        try:
            return await workflow.execute_local_activity(
                agent.name,
                wire,
                result_type=AgentResult,
                activity_id=activity_id,
                start_to_close_timeout=timedelta(seconds=agent.timeout_s),
                schedule_to_close_timeout=timedelta(seconds=agent.schedule_to_close_s)
                if agent.schedule_to_close_s
                else None,
                retry_policy=retry_policy(agent),
                summary=step_summary(agent.name, activity_id),
            )
        except (ApplicationError, ActivityTimeoutError) as err:
            # A local activity's failure arrives unwrapped; wrap it as a standard activity's is,
            # so every pattern handles both paths alike.
            raise ActivityError(
                "local activity failed",
                scheduled_event_id=0,
                started_event_id=0,
                identity="",
                activity_type=agent.name,
                activity_id=activity_id,
                retry_state=None,
            ) from err
    return await workflow.execute_activity(
        agent.name,
        wire,
        result_type=AgentResult,
        activity_id=activity_id,
        task_queue=agent.task_queue or task_queue,
        start_to_close_timeout=timedelta(seconds=agent.timeout_s),
        schedule_to_close_timeout=timedelta(seconds=agent.schedule_to_close_s) if agent.schedule_to_close_s else None,
        heartbeat_timeout=timedelta(seconds=agent.heartbeat_s) if agent.heartbeat_s else None,
        retry_policy=retry_policy(agent),
        summary=step_summary(agent.name, activity_id),
    )
