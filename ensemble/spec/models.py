"""The shared shapes of Ensemble's flows: steps of every pattern and flow specs.

Both workflows and activities import this module, so it imports nothing heavier than pydantic.
Everything a run needs to be interpreted (the flow and every agent spec it uses) travels in the
workflow input, so a run's history alone is enough to replay it.

Steps and flows are defined here; agent specs (agent.py), gate shapes (gate.py), model-backed
agent settings and budgets (llm.py) and run records (records.py) live beside it and are
re-exported; run requests and agent calls (run.py) build on it. `from ensemble.spec import ...`
finds every shared shape.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from ensemble.spec import protocol
from ensemble.spec.agent import AgentKind, AgentSpec, RetrySpec  # noqa: F401  (re-exported)
from ensemble.spec.base import NAME_RE, Effect, _Strict  # noqa: F401  (Effect re-exported)
from ensemble.spec.gate import (  # noqa: F401  (re-exported: the gate shapes are part of the spec)
    APPROVER_RE,
    GROUP_PREFIX,
    Decision,
    Duration,
    GateDecision,
    GateDecisionResult,
    GateEvent,
    GateEventKind,
    GateSpec,
    GateStep,
    GateTier,
    GateWhen,
    parse_duration,
)
from ensemble.spec.llm import (  # noqa: F401  (re-exported: model-backed agents and budgets are part of the spec)
    LLM_PROVIDERS,
    MODEL_RE,
    OUTPUT_TOOL,
    TOOL_NAME_RE,
    BudgetSpec,
    LlmSpec,
    McpServerSpec,
    Price,
    ToolApproval,
    ToolSpec,
)
from ensemble.spec.records import (  # noqa: F401  (re-exported: run records are part of the spec)
    AgentResult,
    FlowOutcome,
    RunStatus,
    RunStatusView,
    StepKind,
    StepRecord,
    StepStatus,
    ToolHold,
    ToolRefusal,
    ToolVerdict,
    Usage,
)

DEFAULT_TASK_QUEUE = "ensemble"
WORKFLOW_NAME = protocol.FLOW_WORKFLOW

Reducer = Literal["replace", "append", "extend", "merge", "add"]


class StateKey(_Strict):
    """A named key of the run state and how writes to it combine."""

    reducer: Reducer = "replace"
    default: Any = None
    description: str = ""


class AgentStep(_Strict):
    """Run one agent. `input` is a template over the run state (see docs/flows.md);
    `output` names the state key the agent's output is written to (default: the step name),
    or maps state keys to fields of the output."""

    name: str | None = Field(None, pattern=NAME_RE)
    agent: str = Field(pattern=NAME_RE)
    input: Any = None
    output: str | dict[str, str] | None = None
    fallback: str | None = Field(
        None, pattern=NAME_RE, description="agent run on the same input when `agent` fails for good"
    )
    compensate: str | None = Field(
        None,
        pattern=NAME_RE,
        description="agent that undoes this step when the run later fails or is cancelled (docs/failures.md)",
    )
    compensate_input: Any = Field(
        None, description="template for the compensation's input; may read $step.input and $step.output (default: both)"
    )

    @property
    def step_name(self) -> str:
        return self.name or self.agent


class SequenceStep(_Strict):
    """Run the nested steps in order."""

    name: str = Field(pattern=NAME_RE)
    sequence: list[Step] = Field(min_length=1)

    @property
    def step_name(self) -> str:
        return self.name


JoinPolicy = Literal["all", "quorum", "first_success", "deadline"]
MergeStrategy = Literal["collect", "majority_vote", "weighted_vote", "unanimous", "veto", "priority"]


class JoinSpec(_Strict):
    """When a parallel step is done. `all`: every branch (one failure fails the step);
    `quorum`: `quorum` successes; `first_success`: one; `deadline`: what finished by `deadline_s`
    (a durable timer), the rest listed as missing. Under quorum, first_success and deadline a
    failing branch is recorded and the others carry on."""

    policy: JoinPolicy = "all"
    quorum: int | None = Field(None, ge=1)
    deadline_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _needs(self) -> JoinSpec:
        if self.policy == "quorum" and self.quorum is None:
            raise ValueError("join policy 'quorum' needs quorum: K")
        if self.policy == "deadline" and self.deadline_s is None:
            raise ValueError("join policy 'deadline' needs deadline_s")
        return self


class MergeSpec(_Strict):
    """How branch results combine into one decision record (see docs/patterns.md)."""

    strategy: MergeStrategy = "collect"
    vote_field: str = Field("vote", description="path of the vote inside a branch's output")
    confidence_field: str | None = Field(None, description="path of a weight multiplier inside a branch's output")
    weights: dict[str, float] = Field(default_factory=dict, description="weight per branch name (default 1)")
    order: list[str] = Field(default_factory=list, description="branch names, most trusted first")
    veto_value: Any = "reject"
    tie_break: Literal["order", "value", "adjudicator", "fail"] = "fail"
    tie_value: Any = None
    adjudicator: str | None = Field(None, pattern=NAME_RE, description="agent that settles ties and splits")
    adjudicator_input: Any = Field(
        None, description="template for the adjudicator's input; may also read $ballots, $tally and $why"
    )

    @model_validator(mode="after")
    def _needs(self) -> MergeSpec:
        if self.strategy == "priority" and not self.order:
            raise ValueError("merge strategy 'priority' needs order: [branch names]")
        if self.tie_break == "order" and not self.order:
            raise ValueError("tie_break 'order' needs order: [branch names]")
        if self.tie_break == "value" and self.tie_value is None:
            raise ValueError("tie_break 'value' needs tie_value")
        if self.tie_break == "adjudicator" and not self.adjudicator:
            raise ValueError("tie_break 'adjudicator' needs adjudicator: AGENT")
        return self


class ParallelSpec(_Strict):
    branches: list[Step] = Field(default_factory=list)
    for_each: str | None = Field(None, pattern=r"^\$", description="a list in the run state: one branch per item")
    as_: str = Field("item", alias="as", pattern=NAME_RE, description="state key holding the item inside a branch")
    do: Step | None = None
    max_concurrency: int | None = Field(None, ge=1)
    join: JoinSpec = Field(default_factory=JoinSpec)
    merge: MergeSpec = Field(default_factory=MergeSpec)
    on_conflict: str | None = Field(None, pattern=NAME_RE, description="agent that resolves conflicting state writes")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _shape(self) -> ParallelSpec:
        if bool(self.branches) == bool(self.for_each or self.do):
            raise ValueError("a parallel step has either branches: [...] or for_each: $KEY with do: STEP")
        if self.for_each and self.do is None or self.do is not None and not self.for_each:
            raise ValueError("for_each and do go together")
        if self.join.quorum and self.branches and self.join.quorum > len(self.branches):
            raise ValueError(f"quorum {self.join.quorum} is more than the {len(self.branches)} branches")
        return self


class ParallelStep(_Strict):
    """Run branches concurrently, join them under a policy and merge their results."""

    name: str = Field(pattern=NAME_RE)
    parallel: ParallelSpec
    output: str | None = Field(None, description="state key for the merged record (default: the step name)")

    @property
    def step_name(self) -> str:
        return self.name


class ChatUntil(_Strict):
    """When a group chat ends (besides max_turns): a keyword in a message, or consensus (every
    participant's latest `vote` is the same)."""

    keyword: str | None = None
    consensus: bool = False


class ChatSpec(_Strict):
    participants: list[str] = Field(min_length=2)
    selector: str = Field("round_robin", description="'round_robin', or an agent that names the next speaker")
    topic: Any = Field(None, description="template: what the chat is about")
    max_turns: int = Field(12, ge=1, le=100_000)
    until: ChatUntil = Field(default_factory=ChatUntil)
    window: int = Field(20, ge=1, description="messages of the transcript each turn sees")
    turns_per_run: int = Field(50, ge=1, description="continue-as-new after this many turns in one run")

    @field_validator("participants")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.match(NAME_RE, name):
                raise ValueError(f"participant '{name}' is not an agent name")
        if len(set(value)) != len(value):
            raise ValueError("participants must be distinct")
        return value


class ChatStep(_Strict):
    """Agents take turns on a shared transcript until a termination rule holds."""

    name: str = Field(pattern=NAME_RE)
    chat: ChatSpec
    output: str | None = Field(None, description="state key for the chat record (default: the step name)")

    @property
    def step_name(self) -> str:
        return self.name


class SupervisorSpec(_Strict):
    """A planner agent turns the task into subtasks; the engine validates the plan and runs each
    subtask as a child workflow in dependency order (independent ones in parallel), reroutes a
    failed subtask to its agent's fallback, and re-plans with the failure as context."""

    planner: str = Field(pattern=NAME_RE)
    planner_input: Any = Field(None, description="template for the planner's input (default: the whole state)")
    agents: list[str] = Field(min_length=1, description="the agents a plan may assign")
    fallbacks: dict[str, str] = Field(default_factory=dict, description="agent -> agent to reroute to when it fails")
    max_subtasks: int = Field(20, ge=1, le=200)
    max_depth: int = Field(10, ge=1, le=50, description="longest chain of dependencies allowed")
    max_parallel: int | None = Field(None, ge=1)
    max_replans: int = Field(1, ge=0, le=5)
    assembler: str | None = Field(None, pattern=NAME_RE, description="agent that assembles the final output")
    assembler_input: Any = Field(None, description="template for the assembler; may read $results and $plan")


class SupervisorStep(_Strict):
    """Hierarchical pattern: plan, delegate to child workflows, monitor, reroute, assemble."""

    name: str = Field(pattern=NAME_RE)
    supervisor: SupervisorSpec
    output: str | None = Field(None, description="state key for the supervisor's record (default: the step name)")

    @property
    def step_name(self) -> str:
        return self.name


STEP_KINDS: dict[str, type] = {
    "agent": AgentStep,
    "sequence": SequenceStep,
    "parallel": ParallelStep,
    "chat": ChatStep,
    "supervisor": SupervisorStep,
    "gate": GateStep,
}


def _step_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        return next((key for key in STEP_KINDS if key in value), None)
    return next((key for key, cls in STEP_KINDS.items() if isinstance(value, cls)), None)


Step = Annotated[
    Annotated[AgentStep, Tag("agent")]
    | Annotated[SequenceStep, Tag("sequence")]
    | Annotated[ParallelStep, Tag("parallel")]
    | Annotated[ChatStep, Tag("chat")]
    | Annotated[SupervisorStep, Tag("supervisor")]
    | Annotated[GateStep, Tag("gate")],
    Discriminator(
        _step_tag,
        custom_error_type="step_kind",
        custom_error_message="a step needs one of: 'agent', 'sequence', 'parallel', 'chat', 'supervisor' or 'gate'",
    ),
]
SequenceStep.model_rebuild()
ParallelSpec.model_rebuild()


def child_steps(step: Any) -> list[tuple[tuple[Any, ...], Any]]:
    """The steps nested directly in a step, with their location relative to it."""
    if isinstance(step, SequenceStep):
        return [(("sequence", i), s) for i, s in enumerate(step.sequence)]
    if isinstance(step, ParallelStep):
        nested = [(("parallel", "branches", i), s) for i, s in enumerate(step.parallel.branches)]
        return nested + ([(("parallel", "do"), step.parallel.do)] if step.parallel.do is not None else [])
    return []


def agent_refs(step: Any) -> list[tuple[tuple[Any, ...], str]]:
    """Agents a step names itself (not its children's), with their location relative to it."""
    refs: list[tuple[tuple[Any, ...], str | None]]
    if isinstance(step, AgentStep):
        refs = [(("agent",), step.agent), (("fallback",), step.fallback), (("compensate",), step.compensate)]
        return [(loc, name) for loc, name in refs if name]
    if isinstance(step, ParallelStep):
        refs = [(("parallel", "merge", "adjudicator"), step.parallel.merge.adjudicator)]
        refs.append((("parallel", "on_conflict"), step.parallel.on_conflict))
        return [(loc, name) for loc, name in refs if name]
    if isinstance(step, SupervisorStep):
        sup = step.supervisor
        refs = [(("supervisor", "planner"), sup.planner)]
        refs += [(("supervisor", "agents", i), name) for i, name in enumerate(sup.agents)]
        refs += [(("supervisor", "fallbacks", k), v) for k, v in sup.fallbacks.items()]
        if sup.assembler:
            refs.append((("supervisor", "assembler"), sup.assembler))
        return [(loc, name) for loc, name in refs if name]
    if isinstance(step, ChatStep):
        refs = [(("chat", "participants", i), name) for i, name in enumerate(step.chat.participants)]
        if step.chat.selector != "round_robin":
            refs.append((("chat", "selector"), step.chat.selector))
        return [(loc, name) for loc, name in refs if name]
    return []


class FlowSpec(_Strict):
    """A flow: agents composed into steps over a typed run state."""

    name: str = Field(pattern=NAME_RE)
    description: str = ""
    version: int = 1
    input_schema: dict[str, Any] | str | None = Field(
        None, description="JSON Schema of the run's input, or 'package.module:Model' for a pydantic model's"
    )
    imports: list[str] = Field(default_factory=list, description="modules that register agents")
    agents: list[AgentSpec] = Field(default_factory=list, description="agents defined in the flow")
    state: dict[str, StateKey] = Field(default_factory=dict)
    steps: list[Step] = Field(min_length=1)
    output: Any = None
    example_input: str | None = None
    task_queue: str | None = None
    tools: list[ToolSpec] = Field(
        default_factory=list, description="tools the flow's llm agents may be allowed to call"
    )
    mcp_servers: list[McpServerSpec] = Field(
        default_factory=list, description="MCP servers the flow's mcp tools come from"
    )
    llm: dict[str, LlmSpec] = Field(
        default_factory=dict,
        description="agent name -> the model-backed version of that function agent (see ENSEMBLE_LLM)",
    )
    budget: BudgetSpec | None = Field(None, description="a per-run limit on model tokens and/or money")
    versioning: Literal["pinned", "auto_upgrade"] | None = Field(
        None,
        description="Worker Versioning: runs stay on the build they started on (pinned) or move to the current build "
        "(auto_upgrade); default: pinned when the flow has an approval gate, else auto_upgrade",
    )
    identity: Literal["proven", "asserted"] = Field(
        "proven",
        description="proven: decisions carry a signed proof (docs/security.md); asserted: a name is believed (demos)",
    )

    @field_validator("state")
    @classmethod
    def _no_input_key(cls, value: dict[str, StateKey]) -> dict[str, StateKey]:
        if "input" in value:
            raise ValueError("'input' is reserved: the run's input is always state key 'input'")
        return value
