"""The step engine a flow run uses: runs agent steps as activities and dispatches nested steps
to their pattern modules. Deterministic: only `workflow.*` APIs, no I/O."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any, Awaitable, Callable

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from ensemble.spec import AgentCall, AgentContext, AgentResult, AgentSpec, AgentStep, RunRequest, Step
    from ensemble.state import RunState, StateError, output_writes, resolve

StepRunner = Callable[["FlowRun", Any, str], Awaitable[Any]]

# Pattern modules register how they run their step type (see workflows/sequential.py).
PATTERNS: dict[type, StepRunner] = {}


def pattern(step_type: type) -> Callable[[StepRunner], StepRunner]:
    def register(fn: StepRunner) -> StepRunner:
        PATTERNS[step_type] = fn
        return fn

    return register


def retry_policy(agent: AgentSpec) -> RetryPolicy:
    r = agent.retry
    return RetryPolicy(
        initial_interval=timedelta(seconds=r.initial_interval_s),
        backoff_coefficient=r.backoff_coefficient,
        maximum_interval=timedelta(seconds=r.max_interval_s),
        maximum_attempts=r.max_attempts,
        non_retryable_error_types=list(r.non_retryable_errors),
    )


async def execute_agent(agent: AgentSpec, call: AgentCall, activity_id: str, task_queue: str) -> AgentResult:
    """Run an agent as an activity whose type is its name, with its timeouts and retry policy,
    on its own task queue if it names one. Every pattern calls agents through here."""
    return await workflow.execute_activity(
        agent.name,
        call,
        result_type=AgentResult,
        activity_id=activity_id,
        task_queue=agent.task_queue or task_queue,
        start_to_close_timeout=timedelta(seconds=agent.timeout_s),
        schedule_to_close_timeout=timedelta(seconds=agent.schedule_to_close_s) if agent.schedule_to_close_s else None,
        heartbeat_timeout=timedelta(seconds=agent.heartbeat_s) if agent.heartbeat_s else None,
        retry_policy=retry_policy(agent),
        summary=f"{agent.name} · step {activity_id.split('#')[0]}",
    )


def failure_message(err: BaseException) -> str:
    """The innermost meaningful message of an activity/child failure chain."""
    while isinstance(err, ActivityError) and err.cause is not None:
        err = err.cause
    return getattr(err, "message", None) or str(err) or type(err).__name__


class FlowRun:
    """One run's mutable interpreter state (lives inside the workflow instance)."""

    def __init__(self, request: RunRequest) -> None:
        self.request = request
        self.flow = request.flow
        self.state = RunState(request.flow.state, request.input)
        self.completed: list[str] = []
        self.running: list[str] = []
        self._ids: dict[str, int] = {}

    def _activity_id(self, step: str) -> str:
        n = self._ids.get(step, 0) + 1
        self._ids[step] = n
        return step if n == 1 else f"{step}#{n}"

    def fork(self, local: dict[str, Any]) -> FlowRun:
        """A branch of this run: its own state (see RunState.fork), shared progress and ids."""
        branch = copy.copy(self)
        branch.state = self.state.fork(local)
        return branch

    async def run_steps(self, steps: list[Step], prefix: str = "") -> Any:
        """Run steps in order; the result of the last one."""
        result = None
        for step in steps:
            result = await self.run_step(step, prefix)
        return result

    async def run_step(self, step: Any, prefix: str = "") -> Any:
        """Run one step of any pattern; its result (an agent's output, a merged record...)."""
        runner = PATTERNS.get(type(step))
        if runner is None:  # a flow spec newer than this worker's code
            raise ApplicationError(f"this worker cannot run steps of type {type(step).__name__}", non_retryable=True)
        return await runner(self, step, f"{prefix}{step.step_name}")

    async def call_agent(self, agent_name: str, step_path: str, payload: Any) -> AgentResult:
        """Run one agent as an activity whose type is the agent's name."""
        agent = self.request.agents[agent_name]
        call = AgentCall(
            agent=agent,
            input=payload,
            context=AgentContext(run_id=workflow.info().workflow_id, flow=self.flow.name, step=step_path, agent=agent.name),
        )
        self.running.append(step_path)
        try:
            return await execute_agent(agent, call, self._activity_id(step_path), self.request.task_queue)
        except ActivityError as err:
            raise ApplicationError(
                f"step '{step_path}' (agent '{agent.name}') failed: {failure_message(err)}",
                type="StepFailed",
                non_retryable=True,
            ) from err
        finally:
            self.running.remove(step_path)

    def read(self, template: Any, step_path: str) -> Any:
        try:
            return resolve(template, self.state.values) if template is not None else self.state.snapshot()
        except StateError as err:
            raise ApplicationError(f"step '{step_path}': {err}", type="StateError", non_retryable=True) from err

    def write(self, output_spec: Any, default_key: str, value: Any, step_path: str) -> None:
        try:
            for key, v in output_writes(output_spec, default_key, value):
                self.state.write(key, v, shared=output_spec is not None)
        except StateError as err:
            raise ApplicationError(f"step '{step_path}': {err}", type="StateError", non_retryable=True) from err


@pattern(AgentStep)
async def run_agent_step(run: FlowRun, step: AgentStep, path: str) -> Any:
    payload = run.read(step.input, path)
    result = await run.call_agent(step.agent, path, payload)
    run.write(step.output, step.step_name, result.output, path)
    run.completed.append(path)
    return result.output
