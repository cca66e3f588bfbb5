"""The step engine a flow run uses: runs agent steps as activities and dispatches nested steps
to their pattern modules. Deterministic: only `workflow.*` APIs, no I/O."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from ensemble.logic.gates import GateBook, gate_names
    from ensemble.logic.inline import InlineBudget, inline_size, oversize_reason
    from ensemble.logic.pricing import PriceUnknown, Spending
    from ensemble.logic.state import RunState, StateError, output_writes, resolve
    from ensemble.spec import AgentCall, AgentContext, AgentResult, AgentSpec, AgentStep, RunRequest, Step, protocol

from ensemble.workflows.activity import execute_agent
from ensemble.workflows.saga import Compensation, Saga

StepRunner = Callable[["FlowRun", Any, str], Awaitable[Any]]

# Pattern modules register how they run their step type (see workflows/sequential.py).
PATTERNS: dict[type, StepRunner] = {}
# How a run waits for people to raise an exhausted budget: registered by workflows/gate.py, which
# builds on this module (so this module never imports it).
BUDGET_GATE: list[Callable[[FlowRun, str], Awaitable[None]]] = []
# How a run waits for people to approve a tool call an agent holds: registered by
# workflows/tool_gate.py (docs/tools.md). It returns the result of the agent's continuation.
TOOL_GATE: list[Callable[[FlowRun, AgentSpec, AgentCall, AgentResult, str, str], Awaitable[AgentResult]]] = []
TOOL_APPROVAL_PATCH = "ensemble-tool-approval"
# A run without a payload store fails, with its reason, a value too large to send (see `inline_size`).
INLINE_LIMIT_PATCH = "ensemble-inline-limit"


def pattern(step_type: type) -> Callable[[StepRunner], StepRunner]:
    def register(fn: StepRunner) -> StepRunner:
        PATTERNS[step_type] = fn
        return fn

    return register


def failure_message(err: BaseException) -> str:
    """The innermost meaningful message of an activity/child failure chain."""
    while isinstance(err, ActivityError) and err.cause is not None:
        err = err.cause
    return getattr(err, "message", None) or str(err) or type(err).__name__


class Rewind(ApplicationError):
    """Go back to an earlier step (a reviewer requested changes). Caught by the step list that holds
    both; one that escapes (validation prevents it) fails the run with this message."""

    def __init__(self, target: str, gate: str) -> None:
        super().__init__(
            f"gate '{gate}' sends the run back to step '{target}', which is not before it in the same list",
            type="BadFlow",
            non_retryable=True,
        )
        self.target = target


class FlowRun:
    """One run's mutable interpreter state (lives inside the workflow instance)."""

    def __init__(self, request: RunRequest) -> None:
        self.request = request
        self.flow = request.flow
        self.state = RunState(request.flow.state, request.input)
        self.completed: list[str] = []
        self.running: list[str] = []
        self._ids: dict[str, int] = {}
        budget_gate = {"budget"} if request.flow.budget and request.flow.budget.approvers else set()
        self.gates = GateBook(gate_names(request.flow.steps) | budget_gate)
        self.notifications: list[asyncio.Task[Any]] = []
        self.saga = Saga()  # undo entries of completed steps (workflows/saga.py)
        self.reused: list[str] = []  # activity ids whose recorded results a seeded run used
        self.spending = Spending()  # model use so far, against the flow's budget (shared by branches)
        self.budget = request.flow.budget.model_copy() if request.flow.budget else None  # raised by approvals
        self.inline = InlineBudget()  # without a payload store: bytes of agent inputs in flight (shared by branches)

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
        """Run steps in order; the result of the last one. A gate whose reviewer requests changes
        sends the run back to an earlier step of the same list (`Rewind`), which runs again."""
        result = None
        names = [step.step_name for step in steps]
        i = 0
        while i < len(steps):
            try:
                result = await self.run_step(steps[i], prefix)
            except Rewind as back:
                if back.target not in names[:i]:
                    raise
                i = names.index(back.target)
                continue
            i += 1
        return result

    async def run_step(self, step: Any, prefix: str = "") -> Any:
        """Run one step of any pattern; its result (an agent's output, a merged record...)."""
        runner = PATTERNS.get(type(step))
        if runner is None:  # a flow spec newer than this worker's code
            raise ApplicationError(f"this worker cannot run steps of type {type(step).__name__}", non_retryable=True)
        return await runner(self, step, f"{prefix}{step.step_name}")

    async def call_agent(
        self, agent_name: str, step_path: str, payload: Any, *, activity_id: str | None = None
    ) -> AgentResult:
        """Run one agent as an activity whose type is the agent's name (`activity_id`: the step's
        path, numbered when the path runs again). A seeded run (redrive, fork) takes the
        recorded result of an activity id it was given instead of running the agent again."""
        agent = self.request.agents[agent_name]
        activity_id = activity_id or self._activity_id(step_path)
        if activity_id in self.request.reuse:
            self.reused.append(activity_id)
            return self.request.reuse[activity_id].model_copy(deep=True)
        await self.check_budget(agent, step_path)
        held = await self.admit_inline(agent, payload, step_path)
        call = AgentCall(agent=agent, input=payload, context=self.agent_context(agent, step_path, activity_id))
        self.running.append(step_path)
        try:
            result = await execute_agent(agent, call, activity_id, self.request.task_queue)
            self.record_usage(result)
            if result.held is not None and TOOL_GATE and workflow.patched(TOOL_APPROVAL_PATCH):
                result = await TOOL_GATE[0](self, agent, call, result, step_path, activity_id)
            return result
        except ActivityError as err:
            if is_cancelled_exception(err) and workflow.patched("ensemble-cancel-not-failure"):
                raise  # the run is being cancelled: it ends cancelled (after its compensations), not failed
            raise ApplicationError(
                f"step '{step_path}' (agent '{agent.name}') failed: {failure_message(err)}",
                type="StepFailed",
                non_retryable=True,
            ) from err
        finally:
            self.running.remove(step_path)
            self.inline.in_flight -= held

    def too_large(self, value: Any) -> int | None:
        """The size of `value` when the run has no payload store and `value` is over what it may
        send inline (RunRequest.inline_limit); None when it fits or goes by reference. Such a value
        would fail every workflow task that sends it (PAYLOADS_TOO_LARGE): the run would hang."""
        limit = self.request.inline_limit
        if limit is None:
            return None
        size = inline_size(value)
        # Checked after the size, so runs that sent such a value before this check replay unchanged.
        return size if size > limit and workflow.patched(INLINE_LIMIT_PATCH) else None

    def too_large_reason(self, what: str, size: int, fix: str) -> str:
        return oversize_reason(what, size, self.request.inline_limit or 0, fix)

    async def admit_inline(self, agent: AgentSpec, payload: Any, step_path: str) -> int:
        """Before an agent's activity is scheduled, without a payload store: fail the run, for good,
        when its input is too large to send; and while other agents' inputs in flight would take
        the workflow task that schedules it over the size of one gRPC message (Temporal would
        terminate the run: parallel branches, a fan-out), wait for some of them to finish, so that
        it goes out in a later task. The bytes it holds until it ends (a `fast` agent's input
        stays in the worker: none)."""
        limit = self.request.inline_limit
        if agent.fast or limit is None:
            return 0
        size = inline_size(payload)
        if size > limit and workflow.patched(INLINE_LIMIT_PATCH):
            raise ApplicationError(
                f"step '{step_path}' (agent '{agent.name}') not started: "
                + self.too_large_reason("its input", size, "pass the step a smaller input (its `input:`)"),
                type="PayloadTooLarge",
                non_retryable=True,
            )
        waited = False
        while not self.inline.admits(size):
            if not waited and not workflow.patched(INLINE_LIMIT_PATCH):
                break  # a run recorded before this check: as it ran
            waited = True
            await workflow.wait_condition(lambda: self.inline.admits(size))
        self.inline.in_flight += size
        return size

    def check_outcome(self, output: Any) -> None:
        """Before the run completes: fail it when its outcome (output and state) is too large to send."""
        state = {k: v for k, v in self.state.values.items() if k != "input"}
        if (size := self.too_large({"output": output, "state": state})) is None:
            return
        raise ApplicationError(
            "the run cannot complete: "
            + self.too_large_reason(
                "its outcome (output and state)", size, "keep large values out of the flow's state"
            ),
            type="PayloadTooLarge",
            non_retryable=True,
        )

    async def check_budget(self, agent: AgentSpec, step_path: str) -> None:
        """Before an agent that may call a model: stop when the run's budget is spent."""
        if agent.kind != "llm" and agent.llm is None:
            return
        while (why := self.spending.exhausted(self.budget)) is not None:
            await self.budget_exhausted(agent, step_path, why)

    async def budget_exhausted(self, agent: AgentSpec, step_path: str, why: str) -> None:
        """The run's budget allows no further model calls. With `budget.approvers` the run waits at
        the approval gate `budget`, and each approval raises the limit (see workflows/gate.py);
        a rejection, or no decision by its deadline, fails the run. Without approvers the run
        fails, non-retryable, with the numbers (type BudgetExhausted)."""
        if self.budget is not None and self.budget.approvers and BUDGET_GATE:
            await BUDGET_GATE[0](self, why)
            return
        raise ApplicationError(
            f"step '{step_path}' (agent '{agent.name}') not started: the run's budget is exhausted: {why}",
            type="BudgetExhausted",
            non_retryable=True,
        )

    def record_usage(self, result: AgentResult) -> None:
        """Add an agent's token use (and cost, for a budget in money) to the run's spending."""
        if result.usage is None:
            return
        try:
            self.spending.add(result.model, result.usage, self.flow.budget)
        except PriceUnknown as err:
            raise ApplicationError(str(err), type="PriceUnknown", non_retryable=True) from err

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

    def agent_context(self, agent: AgentSpec, step_path: str, activity_id: str) -> AgentContext:
        """What the agent is told about its step. An irreversible agent gets an idempotency key:
        the run's id (or the key a redrive or fork inherited) and the activity id, never the
        attempt, so every retry, redrive and fork of the step presents the same key."""
        key = None
        if agent.effect == "irreversible" or any(t.effect == "irreversible" for t in agent.tool_specs):
            key = self.request.idempotency_keys.get(activity_id) or protocol.idempotency_key(
                workflow.info().workflow_id, activity_id
            )
        return AgentContext(
            run_id=workflow.info().workflow_id,
            flow=self.flow.name,
            step=step_path,
            agent=agent.name,
            idempotency_key=key,
        )

    async def compensate(self) -> list[dict[str, Any]]:
        """Undo the completed steps, last first (see workflows/saga.py); their records."""
        return await self.saga.unwind(self._run_compensation)

    async def _run_compensation(self, entry: Compensation) -> None:
        agent = self.request.agents[entry.agent]
        if not agent.fast and (size := self.too_large(entry.payload)) is not None:
            entry.status = "failed"
            entry.error = "not started: " + self.too_large_reason(
                "its input", size, "give it a smaller `compensate_input`"
            )
            workflow.logger.warning("compensation of step '%s' (agent '%s') %s", entry.step, agent.name, entry.error)
            return
        call = AgentCall(
            agent=agent, input=entry.payload, context=self.agent_context(agent, entry.step, entry.activity_id)
        )
        self.running.append(entry.step)
        try:
            result = await execute_agent(agent, call, entry.activity_id, self.request.task_queue)
            entry.status, entry.output = "completed", result.output
        except ActivityError as err:
            entry.status, entry.error = "failed", failure_message(err)
        finally:
            self.running.remove(entry.step)


async def _call_with_fallback(run: FlowRun, step: AgentStep, path: str, payload: Any) -> tuple[AgentResult, str]:
    """Run the step's agent; when it fails for good (retries exhausted, a non-retryable error, a
    timeout: not a cancellation), its fallback on the same input. The result and the activity id
    that produced it (the fallback's is `PATH#fallback`)."""
    activity_id = run._activity_id(path)
    fallback_id = f"{activity_id}{protocol.FALLBACK_SUFFIX}"
    if step.fallback and activity_id not in run.request.reuse and fallback_id in run.request.reuse:
        return await run.call_agent(step.fallback, path, payload, activity_id=fallback_id), fallback_id
    try:
        return await run.call_agent(step.agent, path, payload, activity_id=activity_id), activity_id
    except ApplicationError as err:
        if not step.fallback or err.type != "StepFailed":
            raise
        first = failure_message(err.__cause__) if err.__cause__ else err.message
    workflow.logger.warning(
        "step '%s': agent '%s' failed (%s); running its fallback '%s'", path, step.agent, first, step.fallback
    )
    try:
        return await run.call_agent(step.fallback, path, payload, activity_id=fallback_id), fallback_id
    except ApplicationError as err:
        if err.type != "StepFailed":
            raise
        second = failure_message(err.__cause__) if err.__cause__ else err.message
        raise ApplicationError(
            f"step '{path}' (agent '{step.agent}') failed: {first}; its fallback '{step.fallback}' failed too: {second}",
            type="StepFailed",
            non_retryable=True,
        ) from (err.__cause__ or err)  # the fallback's activity failure, whose message this one already holds


@pattern(AgentStep)
async def run_agent_step(run: FlowRun, step: AgentStep, path: str) -> Any:
    payload = run.read(step.input, path)
    result, activity_id = await _call_with_fallback(run, step, path, payload)
    # Registered before the output is written: a refused write fails the run, and the agent's
    # effect still needs undoing.
    run.saga.register(step, path, activity_id, run.state.values, payload, result.output)
    run.write(step.output, step.step_name, result.output, path)
    run.completed.append(path)
    return result.output
