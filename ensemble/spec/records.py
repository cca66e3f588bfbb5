"""The records of runs: agent results with their usage, step records, outcomes and the status
view. Re-exported by ensemble.spec."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ensemble.spec.base import _Strict


class Usage(_Strict):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @model_validator(mode="before")
    @classmethod
    def _from_wire(cls, data: Any) -> Any:
        """Also read as a result sends it compact (`to_wire`)."""
        if isinstance(data, list) and len(data) in (2, 3) and all(type(n) is int for n in data):
            prompt, completion, *total = data
            return {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": (total or [prompt + completion])[0],
            }
        return data

    def to_wire(self) -> list[int]:
        """`[prompt, completion]` when the total is their sum, else `[prompt, completion, total]`."""
        pair = [self.prompt_tokens, self.completion_tokens]
        return pair if self.total_tokens == sum(pair) else [*pair, self.total_tokens]


class ToolRefusal(_Strict):
    """A tool call the model asked for and the engine refused (the agent may not call that tool)."""

    tool: str
    reason: str
    turn: int = Field(description="which model reply asked for it (1 = the first)")


class ToolHold(_Strict):
    """A tool call waiting for people: its exact arguments, their digest, and the agent's transcript."""

    tool: str
    call_id: str
    arguments: Any = None
    digest: str
    approvers: list[str]
    quorum: int = 1
    timeout: float | None = None
    checkpoint: dict[str, Any] = Field(default_factory=dict)


class ToolVerdict(_Strict):
    """What people decided about a held tool call, handed to the agent that continues."""

    call_id: str
    digest: str
    outcome: Literal["approved", "rejected", "changes_requested", "timed_out"]
    by: str = ""
    comment: str = ""
    checkpoint: dict[str, Any] = Field(default_factory=dict)


class AgentResult(_Strict):
    """The activity result: the agent's output and, for model-backed agents, token usage, the
    model that answered and the tool calls that were refused."""

    output: Any = None
    usage: Usage | None = None
    model: str | None = None
    refusals: list[ToolRefusal] = Field(default_factory=list)
    # Set when the model called a tool that needs approval: the attempt ended there and the run
    # waits at a gate; the agent continues from `held.checkpoint` once people decide (docs/tools.md).
    held: ToolHold | None = None

    def to_wire(self, *, compact_usage: bool = False) -> dict[str, Any]:
        """The activity result as it is sent: fields at their defaults left out (they read back
        the same); with `compact_usage`, the token usage as a list (`Usage.to_wire`), for a
        workflow that reads it (one that named the agent's spec by digest)."""
        wire = self.model_dump(mode="json", exclude_defaults=True)
        if compact_usage and self.usage is not None:
            wire["usage"] = self.usage.to_wire()
        return wire


StepStatus = Literal[
    "scheduled", "running", "retrying", "waiting", "completed", "failed", "canceled", "timed_out", "reused"
]
StepKind = Literal["agent", "gate", "compensation"]


class StepRecord(_Strict):
    """One step of a run as `status` shows it: an agent's activity, or a human gate (agent
    `human`, status `waiting` while open)."""

    name: str
    agent: str
    status: StepStatus
    kind: StepKind = "agent"
    attempts: int = 0
    started_at: str | None = None
    ended_at: str | None = None
    latency_ms: float | None = None
    output: Any = None
    summary: str | None = Field(None, description="a one-line summary of `output` (the table `status` prints)")
    attempt_started_at: str | None = Field(
        None, description="when the last attempt started (earlier attempts and backoff came before)"
    )
    error: str | None = None
    usage: Usage | None = None
    model: str | None = None
    refusals: list[ToolRefusal] = Field(default_factory=list)


class FlowOutcome(_Strict):
    """What the workflow returns."""

    flow: str
    output: Any = None
    state: dict[str, Any] = Field(default_factory=dict)
    steps: list[str] = Field(default_factory=list, description="steps completed, in order")
    approvals: list[dict[str, Any]] = Field(
        default_factory=list, description="every gate's record: decisions and escalations"
    )
    spent: Usage | None = Field(
        None, description="model use of this run's own agents and its subtasks (counts against a budget)"
    )
    spent_usd: float = 0.0


RunStatus = Literal["running", "waiting_for_approval", "completed", "failed", "canceled", "terminated", "timed_out"]


class RunStatusView(_Strict):
    """`starter.py status --json`."""

    run_id: str
    flow: str | None
    status: RunStatus
    steps: list[StepRecord] = Field(default_factory=list)
    pending_approvals: list[dict[str, Any]] = Field(default_factory=list)
    error: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    usage: Usage | None = Field(
        None, description="the token usage of every step, summed (none when no step used a model)"
    )
    asks_again: dict[str, Any] | None = Field(
        None, description="the rejected run this run asks again: {run_id, gate, by, why, at} (`run --again`)"
    )
    flow_version: str | None = Field(
        None, description="the flow version the run names (NAME@DIGEST; null where it carried its flow: docs/flows.md)"
    )
