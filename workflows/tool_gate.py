"""Approval of a tool call (docs/tools.md): an llm agent whose model called a tool declared with
`approval:` ends its activity and hands back the call (tool, exact arguments, their digest) with its
transcript. The run parks at a gate named `tool.TOOL` whose content is the tool and its arguments,
so every proven decision binds their digest; it is listed in `pending` like any gate. Then a new
activity continues the agent from the recorded transcript with the verdict: approved runs the call
with exactly those arguments, rejected (or no decision in time) gives the model the refusal as the
tool's result, requested changes give it the comment. While people take their time no worker slot
and no model connection is held: the wait is the workflow's.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from ensemble.workflows.activity import execute_agent
from ensemble.workflows.engine import TOOL_GATE, FlowRun, Rewind
from ensemble.workflows.gate import run_gate

with workflow.unsafe.imports_passed_through():
    from ensemble.spec import AgentCall, AgentResult, AgentSpec, GateSpec, GateStep
    from ensemble.spec.llm import held_call
    from ensemble.spec.records import ToolVerdict

MAX_HOLDS = 50  # tool approvals one agent step may ask for


def literal(value: Any) -> Any:
    """`value` as a gate's `show` template that resolves to exactly `value` (a string starting
    with '$' is escaped, so the model's arguments are never read as references to the state)."""
    if isinstance(value, str):
        return "$" + value if value.startswith("$") else value
    if isinstance(value, dict):
        return {k: literal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [literal(v) for v in value]
    return value


async def hold_tool_call(
    run: FlowRun, agent: AgentSpec, call: AgentCall, result: AgentResult, step_path: str, activity_id: str
) -> AgentResult:
    holds = 0
    while result.held is not None:
        held = result.held
        holds += 1
        if holds > MAX_HOLDS:
            raise ApplicationError(
                f"agent '{agent.name}' asked for more than {MAX_HOLDS} tool approvals in one step",
                type="TooManyApprovals",
                non_retryable=True,
            )
        name = f"tool.{held.tool}"
        run.gates.known.add(name)
        step = GateStep(
            name=name,
            gate=GateSpec(
                approvers=held.approvers,
                quorum=held.quorum,
                timeout=held.timeout,
                on_timeout="reject",
                on_reject="continue",
                changes_to="model",
                max_rounds=20,
                show=literal(held_call(held.tool, held.arguments)),
            ),
        )
        # The record is kept with the run's approvals (outcome, status), never written to its state.
        step = step.model_copy(update={"output": {}})
        path = f"{step_path}/{name}#{holds}"
        try:
            record = await run_gate(run, step, path)
        except Rewind:  # the reviewer asked for changes: they go back to the model, not to an earlier step
            record = run.gates.records[-1]
        shown = record.get("digest") or held.digest
        if shown != held.digest:  # what people were shown is not what the agent holds: never run it
            raise ApplicationError(
                f"tool call {held.call_id} ({held.tool}): the gate showed other arguments than the agent holds",
                type="DigestMismatch",
                non_retryable=True,
            )
        by = record.get("decided_by") or ""
        outcome = "timed_out" if by == "timeout" and record["status"] != "approved" else record["status"]
        verdict = ToolVerdict(
            call_id=held.call_id,
            digest=held.digest,
            outcome=outcome,
            by=by,
            comment=record.get("comment") or "",
            checkpoint=held.checkpoint,
        )
        following = call.model_copy(update={"verdict": verdict})
        result = await execute_agent(agent, following, f"{activity_id}~{holds}", run.request.task_queue)
        run.record_usage(result)
    return result


TOOL_GATE.append(hold_tool_call)
