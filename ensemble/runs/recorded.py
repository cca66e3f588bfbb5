"""What a run's history recorded, as `ensemble.runs.history` folds it: each agent call, gate
notification, decision, tier's keys and child workflow, and the run they belong to. Every view of
a run (status, timeline, dead-letter queue, redrive and fork, inbox, audit) reads these."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ensemble.spec import RunRequest, protocol, versions
from ensemble.spec.errors import EnsembleError


@dataclass
class Call:
    """One agent call (an activity, or a fast agent's local activity) as the history recorded it,
    or a result a redrive or fork reused."""

    activity_id: str
    agent: str
    status: str = "scheduled"  # scheduled, running, completed, failed, timed_out, canceled, reused
    attempts: int = 0
    input: Any = None
    result: Any = None  # the decoded AgentResult, when completed or reused
    key: str | None = None  # the idempotency key it was given
    error: str | None = None
    scheduled_at: datetime | None = None
    attempt_started_at: datetime | None = None
    ended_at: datetime | None = None
    local: bool = False

    @property
    def step(self) -> str:
        return protocol.step_of(self.activity_id)

    @property
    def compensation(self) -> bool:
        return self.activity_id.endswith(protocol.COMPENSATE_SUFFIX)

    @property
    def output(self) -> Any:
        return self.result.get("output") if isinstance(self.result, dict) else self.result


@dataclass
class GateNote:
    """A gate's notification (opened, escalated, decided) with when it was scheduled."""

    at: datetime
    note: dict[str, Any]


@dataclass
class Decision:
    """A decision a person sent to the run (update or signal), and what the run answered."""

    at: datetime
    via: str  # update | signal
    decision: dict[str, Any]
    result: dict[str, Any] | None = None  # the update's answer (GateDecisionResult), when it completed
    refused: str | None = None
    clock: datetime | None = None  # the workflow's clock when it took the decision (its task's start)


@dataclass
class TierKeys:
    """What a gate tier's opening resolved for verifying decisions: the gate, round, tier and the
    digest of what it showed (the activity's input), and the people and keys (its result)."""

    at: datetime
    spec: dict[str, Any]
    trust: Any = None


@dataclass
class Child:
    """A child workflow (a supervisor's subtask or a group chat) started by the run."""

    workflow_id: str
    run_id: str = ""  # the execution started, so a child id reused in a later round reads back its own run
    started: bool = False
    error: str | None = None


@dataclass
class RunHistory:
    run_id: str
    workflow_type: str
    status: str
    description: Any
    raw_input: Any = None
    request: RunRequest | None = None
    calls: list[Call] = field(default_factory=list)  # reused ones first, then in schedule order
    gate_notes: list[GateNote] = field(default_factory=list)
    tier_keys: list[TierKeys] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    children: list[Child] = field(default_factory=list)
    error: str | None = None
    recorded_run_id: str | None = None  # the run id its agent calls carry, else its start event's workflow id
    error_type: str | None = None  # the failure's application error type (GateRejected, BudgetExhausted, ...)
    started_at: datetime | None = None
    ended_at: datetime | None = None

    def compensated(self) -> set[str]:
        """Activity ids of the steps whose compensation completed."""
        n = len(protocol.COMPENSATE_SUFFIX)
        return {c.activity_id[:-n] for c in self.calls if c.compensation and c.status == "completed"}

    @property
    def run_request(self) -> RunRequest:
        """The flow run's request (refused for another workflow's history)."""
        if self.request is None:
            raise EnsembleError(f"run '{self.run_id}' is a {self.workflow_type} workflow, not a flow run")
        return self.request

    @property
    def flow_version(self) -> str | None:
        """The flow version the run's request names (NAME@DIGEST); None where it carried its flow."""
        named = self.raw_input.get(versions.REF) if isinstance(self.raw_input, dict) else None
        return named if isinstance(named, str) else None

    @property
    def failed_children(self) -> list[tuple[str, str]]:
        return [(c.workflow_id, c.error) for c in self.children if c.error is not None]
