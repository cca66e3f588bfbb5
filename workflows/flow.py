"""The one workflow that interprets every flow."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError, FailureError

from ensemble.workflows import chat, gate, hierarchical, parallel, sequential, tool_gate  # noqa: F401  (register the patterns)
from ensemble.workflows.engine import FlowRun

with workflow.unsafe.imports_passed_through():
    from ensemble.logic.gates import GateRefused
    from ensemble.spec import WORKFLOW_NAME, FlowOutcome, GateDecision, GateDecisionResult, RunRequest


@workflow.defn(name=WORKFLOW_NAME)
class EnsembleFlow:
    @workflow.init
    def __init__(self, request: RunRequest) -> None:
        # Built before any handler runs, so an early decision finds the run's gates.
        self._run: FlowRun = FlowRun(request)

    @workflow.run
    async def run(self, request: RunRequest) -> FlowOutcome:
        run = self._run
        try:
            await run.run_steps(request.flow.steps)
            output = (
                run.read(request.flow.output, "output")
                if request.flow.output is not None
                else {k: v for k, v in run.state.values.items() if k != "input"}
            )
            run.check_outcome(output)  # a run without a payload store fails, with its reason, instead of hanging
        except (FailureError, asyncio.CancelledError):
            # Failed for good, or cancelled: undo the completed steps, last first (workflows/saga.py),
            # then end failed or cancelled all the same. A bug in workflow code is neither: its task
            # is retried and nothing is undone.
            if run.saga.entries:
                await run.compensate()
            raise
        await asyncio.gather(*run.notifications)
        await workflow.wait_condition(workflow.all_handlers_finished)
        # The input is already in the run's first event: the outcome leaves it out to stay small.
        state = {k: v for k, v in run.state.snapshot().items() if k != "input"}
        return FlowOutcome(
            flow=request.flow.name,
            output=output,
            state=state,
            steps=list(run.completed),
            approvals=list(run.gates.records),
            spent=run.spending.usage() if run.spending.calls else None,
            spent_usd=run.spending.usd,
        )

    @workflow.update
    async def decide(self, decision: GateDecision) -> GateDecisionResult:
        """A person approves, rejects or requests changes on an open gate."""
        try:
            # Replaying, the update is one the validator accepted: its proof is read back, not re-verified.
            return self._run.gates.apply(decision, workflow.now(), accepted=workflow.unsafe.is_replaying())
        except GateRefused as err:  # lost a race with another decision after validation
            raise ApplicationError(str(err), type="GateRefused", non_retryable=True) from None

    @decide.validator
    def _check_decision(self, decision: GateDecision) -> None:
        """Refused decisions never reach the history: over the size caps, unknown or closed gate, a
        proof that does not verify (wrong signer, run, gate, round, tier or digest; expired;
        used before), not an approver of the current tier, a second decision by the same person."""
        try:
            self._run.gates.check(decision, workflow.now())
        except GateRefused as err:
            raise ApplicationError(str(err), type="GateRefused", non_retryable=True) from None

    @workflow.signal
    def decision(self, decision: GateDecision) -> None:
        """Fire-and-forget form of `decide`, checked the same way (the proof too). A refused one is
        dropped: counted and logged in one line, its content never kept."""
        try:
            self._run.gates.apply(decision, workflow.now())
        except GateRefused as err:
            self._run.gates.refused += 1
            workflow.logger.warning("decision signal refused (%d so far): %s", self._run.gates.refused, str(err)[:300])

    @workflow.query
    def pending(self) -> list[dict[str, Any]]:
        """The run's open gates: name, tier, approvers, quorum, approvals so far, deadline."""
        return self._run.gates.pending()

    @workflow.query
    def state(self) -> dict[str, Any]:
        """The live run state (named keys, including `input`)."""
        return self._run.state.snapshot()

    @workflow.query
    def progress(self) -> dict[str, list[str]]:
        """Steps completed and steps running right now."""
        return {"completed": list(self._run.completed), "running": list(self._run.running)}

    @workflow.query
    def recovery(self) -> dict[str, Any]:
        """Failure handling so far: compensations (in the order they run, with their outcome) and,
        in a redrive or fork, the activity ids whose recorded results were reused."""
        return {
            "compensations": self._run.saga.records(),
            "reused": list(self._run.reused),
            "origin": self._run.request.origin,
        }
