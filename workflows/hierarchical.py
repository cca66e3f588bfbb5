"""Hierarchical pattern: a planner agent plans, the engine validates the plan and delegates each
subtask to a child workflow in dependency order (independent subtasks in parallel), monitors them,
reroutes a failed subtask to its agent's fallback, re-plans with the failure as context when that
fails too, and assembles the final output."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError, ChildWorkflowError
from temporalio.workflow import ParentClosePolicy

from ensemble.workflows.engine import FlowRun, failure_message, pattern

with workflow.unsafe.imports_passed_through():
    from ensemble.logic.plans import Plan, PlanError, Subtask, sinks, validate_plan
    from ensemble.logic.state import StateError, resolve
    from ensemble.spec import (
        WORKFLOW_NAME,
        AgentStep,
        FlowOutcome,
        FlowSpec,
        ParallelSpec,
        ParallelStep,
        RunRequest,
        SupervisorStep,
    )


class SubtaskFailed(Exception):
    def __init__(self, subtask: Subtask, message: str) -> None:
        super().__init__(message)
        self.subtask, self.message = subtask, message


def _child_flow(run: FlowRun, sub: Subtask, agent: str | None, path: str) -> FlowSpec:
    """A one-step flow for the child: the subtask's own step, the agent once, or the agent once
    per item (`$item`) when for_each."""
    if sub.step is not None:
        steps = [sub.parsed_step()]
    elif sub.for_each is None:
        steps = [AgentStep(name=sub.id, agent=agent, input="$input")]
    else:
        fan = ParallelSpec(for_each="$input", do=AgentStep(name=agent, agent=agent, input=sub.input))
        steps = [ParallelStep(name=sub.id, parallel=fan)]
    output = f"${sub.id}" if sub.for_each is None else f"${sub.id}.results"
    # The subtask's run gets what is left of the budget, and reports its model use back (_delegate).
    return FlowSpec(
        name=f"{run.flow.name}.{path}", steps=steps, output=output, budget=run.spending.remaining(run.budget)
    )


async def _delegate(run: FlowRun, sub: Subtask, agent: str | None, path: str, attempt: int, payload: Any) -> Any:
    if (size := run.too_large(payload)) is not None:  # without a payload store (docs/operations.md)
        raise ApplicationError(
            f"subtask '{path}' not started: " + run.too_large_reason("its input", size, "give it a smaller input"),
            type="PayloadTooLarge",
            non_retryable=True,
        )
    request = RunRequest(
        flow=_child_flow(run, sub, agent, path),
        agents={name: run.request.agents[name] for name in ([agent] if agent else sub.agents())},
        input=payload,
        task_queue=run.request.task_queue,
        inline_limit=run.request.inline_limit,  # the subtask's steps are held to the same limit
    )
    child_id = f"{workflow.info().workflow_id}/{path}" + (f"#{attempt}" if attempt > 1 else "")
    outcome = await workflow.execute_child_workflow(
        WORKFLOW_NAME,
        request,
        id=child_id,
        result_type=FlowOutcome,
        task_queue=run.request.task_queue,
        parent_close_policy=ParentClosePolicy.TERMINATE,  # subtasks never outlive their supervisor
        static_summary=f"{agent or 'step'} · subtask {path}",
    )
    if outcome.spent is not None:
        run.spending.add_spent(outcome.spent, outcome.spent_usd)
    return outcome.output


class Supervision:
    """One supervisor step's run: its plans, subtask records and results."""

    def __init__(self, run: FlowRun, step: SupervisorStep, path: str) -> None:
        self.run, self.step, self.path, self.spec = run, step, path, step.supervisor
        self.results: dict[str, Any] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self.failures: list[str] = []
        self.attempts: dict[str, int] = {}

    async def plan(self) -> Plan:
        scope = {**self.run.state.values, "failures": self.failures}
        payload = resolve(self.spec.planner_input, scope) if self.spec.planner_input is not None else dict(scope)
        if self.failures and isinstance(payload, dict):
            payload = {**payload, "failures": list(self.failures)}
        rnd = len(self.failures)
        result = await self.run.call_agent(
            self.spec.planner, f"{self.path}.plan" + (f"{rnd + 1}" if rnd else ""), payload
        )
        try:
            return validate_plan(result.output, self.spec.agents, self.spec.max_subtasks, self.spec.max_depth)
        except PlanError as err:
            raise ApplicationError(
                f"step '{self.path}': the planner's plan was refused: {err}", type="PlanRefused", non_retryable=True
            ) from err

    async def subtask(self, sub: Subtask) -> Any:
        """Run one subtask as a child workflow; on failure, once more on its agent's fallback."""
        path = f"{self.path}.{sub.id}"
        record = self.records[sub.id] = {
            "id": sub.id,
            "agent": sub.agent,
            "status": "running",
            "fallback": None,
            "error": None,
        }
        scope = {**self.run.state.values, "results": self.results}
        try:
            payload = resolve(sub.for_each if sub.for_each else sub.input, scope)
        except StateError as err:
            record.update(status="failed", error=str(err))
            raise SubtaskFailed(sub, f"subtask '{sub.id}': {err}") from err
        self.run.running.append(path)
        try:
            fallback = self.spec.fallbacks.get(sub.agent) if sub.agent else None
            for agent in [sub.agent, *([fallback] if fallback else [])]:  # [None] for a step subtask
                self.attempts[sub.id] = self.attempts.get(sub.id, 0) + 1
                try:
                    output = await _delegate(self.run, sub, agent, path, self.attempts[sub.id], payload)
                except ChildWorkflowError as err:
                    record["error"] = failure_message(err.cause or err)
                    continue
                record.update(
                    status="completed", agent=agent, fallback=agent if agent != sub.agent else None, error=None
                )
                self.run.completed.append(path)
                return output
            record["status"] = "failed"
            tried = f" and its fallback '{self.spec.fallbacks[sub.agent]}'" if sub.agent in self.spec.fallbacks else ""
            raise SubtaskFailed(sub, f"subtask '{sub.id}' ({sub.agent or 'step'}{tried}) failed: {record['error']}")
        finally:
            self.run.running.remove(path)

    async def execute(self, plan: Plan) -> SubtaskFailed | None:
        """Run the plan's subtasks in dependency order; the first failure, if any."""
        todo = [s for s in plan.subtasks if s.id not in self.results]  # a re-plan reuses finished work
        running: dict[asyncio.Future, Subtask] = {}
        limit = self.spec.max_parallel or len(plan.subtasks)
        failure: SubtaskFailed | None = None
        while (todo or running) and failure is None:
            for sub in [s for s in todo if all(d in self.results for d in s.depends_on)][
                : max(limit - len(running), 0)
            ]:
                todo.remove(sub)
                running[asyncio.ensure_future(self.subtask(sub))] = sub
            if not running:
                return SubtaskFailed(todo[0], f"subtask '{todo[0].id}' waits on subtasks that did not finish")
            done, _ = await workflow.wait(list(running), return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=lambda t: plan.subtasks.index(running[t])):
                sub = running.pop(task)
                try:
                    self.results[sub.id] = task.result()
                except SubtaskFailed as err:
                    failure = failure or err
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        return failure

    async def assemble(self, plan: Plan) -> Any:
        if not self.spec.assembler:
            ends = sinks(plan)
            return self.results[ends[0]] if len(ends) == 1 else {i: self.results[i] for i in ends}
        scope = {**self.run.state.values, "results": self.results, "plan": plan.model_dump()}
        template = self.spec.assembler_input if self.spec.assembler_input is not None else {"results": "$results"}
        try:
            payload = resolve(template, scope)
        except StateError as err:
            raise ApplicationError(
                f"step '{self.path}': assembler_input: {err}", type="StateError", non_retryable=True
            ) from err
        return (await self.run.call_agent(self.spec.assembler, f"{self.path}.assemble", payload)).output


@pattern(SupervisorStep)
async def run_supervisor(run: FlowRun, step: SupervisorStep, path: str) -> Any:
    sup = Supervision(run, step, path)
    plans: list[dict[str, Any]] = []
    while True:
        plan = await sup.plan()
        plans.append(plan.model_dump())
        failure = await sup.execute(plan)
        if failure is None:
            break
        sup.failures.append(failure.message)
        if len(sup.failures) > step.supervisor.max_replans:
            raise ApplicationError(
                f"step '{path}': {failure.message}; gave up after {step.supervisor.max_replans} re-plan(s)",
                type="SupervisorFailed",
                non_retryable=True,
            )
    record = {
        "output": await sup.assemble(plan),
        "plan": plans[-1]["subtasks"],
        "rationale": plans[-1]["rationale"],
        "rounds": len(plans),
        "failures": sup.failures,
        "subtasks": [sup.records[s.id] for s in plan.subtasks],
        "results": sup.results,
    }
    run.write(step.output, step.step_name, record, path)
    run.completed.append(path)
    return record
