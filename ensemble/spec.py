"""The shared shapes of Ensemble: agent specs, flow specs, run requests and records.

Both workflows and activities import this module, so it imports nothing heavier than pydantic.
Everything a run needs to be interpreted (the flow and every agent spec it uses) travels in the
workflow input, so a run's history alone is enough to replay it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

NAME_RE = r"^[A-Za-z][A-Za-z0-9_.-]*$"
DEFAULT_TASK_QUEUE = "ensemble"
WORKFLOW_NAME = "EnsembleFlow"

Effect = Literal["read", "idempotent", "irreversible"]
Reducer = Literal["replace", "append", "extend", "merge", "add"]
# The executor kinds this release runs. A new kind (such as `llm`) adds its name here and
# registers an executor in `activities.executors`; nothing else in the engine changes.
AgentKind = Literal["function", "http"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetrySpec(_Strict):
    """How Temporal retries an agent. Bounded by default: a run never retries forever."""

    initial_interval_s: float = Field(1.0, gt=0)
    backoff_coefficient: float = Field(2.0, ge=1)
    max_interval_s: float = Field(30.0, gt=0)
    max_attempts: int = Field(3, ge=1, le=100)
    non_retryable_errors: list[str] = Field(default_factory=list)


class AgentSpec(_Strict):
    """A named unit of work, run as a Temporal activity whose type is the agent's name."""

    name: str = Field(pattern=NAME_RE)
    description: str = ""
    role: str = ""
    kind: AgentKind = "function"
    # kind=function: "package.module:callable"
    handler: str | None = None
    # kind=http: the service to POST the step's input to. Header values may use ${env:NAME},
    # resolved on the worker, so credentials never enter a run's history.
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    timeout_s: float = Field(60.0, gt=0, description="start-to-close timeout of one attempt")
    schedule_to_close_s: float | None = Field(None, gt=0)
    heartbeat_s: float | None = Field(None, gt=0)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    tools: list[str] = Field(default_factory=list)
    effect: Effect = "read"
    task_queue: str | None = Field(None, description="run on workers of this queue (default: the flow's)")

    @model_validator(mode="after")
    def _kind_fields(self) -> AgentSpec:
        if self.kind == "function":
            if not self.handler or not re.match(r"^[\w.]+:[\w.]+$", self.handler):
                raise ValueError("a function agent needs handler: 'package.module:callable'")
        elif self.kind == "http":
            if not self.url or not re.match(r"^https?://", self.url):
                raise ValueError("an http agent needs url: 'http(s)://...'")
        return self


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
    max_turns: int = Field(12, ge=1, le=500)
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
}


def _step_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        return next((key for key in STEP_KINDS if key in value), None)
    return next((key for key, cls in STEP_KINDS.items() if isinstance(value, cls)), None)


Step = Annotated[
    Union[
        Annotated[AgentStep, Tag("agent")],
        Annotated[SequenceStep, Tag("sequence")],
        Annotated[ParallelStep, Tag("parallel")],
        Annotated[ChatStep, Tag("chat")],
        Annotated[SupervisorStep, Tag("supervisor")],
    ],
    Discriminator(
        _step_tag,
        custom_error_type="step_kind",
        custom_error_message="a step needs one of: 'agent', 'sequence', 'parallel', 'chat' or 'supervisor'",
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
    if isinstance(step, AgentStep):
        return [(("agent",), step.agent)]
    if isinstance(step, ParallelStep):
        refs = [(("parallel", "merge", "adjudicator"), step.parallel.merge.adjudicator)]
        refs.append((("parallel", "on_conflict"), step.parallel.on_conflict))
        return [(loc, name) for loc, name in refs if name]
    if isinstance(step, SupervisorStep):
        sup = step.supervisor
        refs = [(("supervisor", "planner"), sup.planner)]
        refs += [(("supervisor", "agents", i), name) for i, name in enumerate(sup.agents)]
        refs += [(("supervisor", "fallbacks", k), v) for k, v in sup.fallbacks.items()]
        return refs + ([(("supervisor", "assembler"), sup.assembler)] if sup.assembler else [])
    if isinstance(step, ChatStep):
        refs = [(("chat", "participants", i), name) for i, name in enumerate(step.chat.participants)]
        if step.chat.selector != "round_robin":
            refs.append((("chat", "selector"), step.chat.selector))
        return refs
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

    @field_validator("state")
    @classmethod
    def _no_input_key(cls, value: dict[str, StateKey]) -> dict[str, StateKey]:
        if "input" in value:
            raise ValueError("'input' is reserved: the run's input is always state key 'input'")
        return value


class RunRequest(_Strict):
    """The workflow input: a flow with every agent it uses resolved, and the run's input."""

    flow: FlowSpec
    agents: dict[str, AgentSpec]
    input: Any = None
    task_queue: str = DEFAULT_TASK_QUEUE


class AgentContext(_Strict):
    """What an agent knows about the step it runs in."""

    run_id: str
    flow: str
    step: str
    agent: str
    attempt: int = 1


class AgentCall(_Strict):
    """The activity input: the agent's spec, the step's resolved input, and the context."""

    agent: AgentSpec
    input: Any = None
    context: AgentContext


class Usage(_Strict):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class AgentResult(_Strict):
    """The activity result: the agent's output and, for model-backed agents, token usage."""

    output: Any = None
    usage: Usage | None = None


StepStatus = Literal["scheduled", "running", "retrying", "waiting", "completed", "failed", "canceled", "timed_out"]
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
    error: str | None = None


class FlowOutcome(_Strict):
    """What the workflow returns."""

    flow: str
    output: Any = None
    state: dict[str, Any] = Field(default_factory=dict)
    steps: list[str] = Field(default_factory=list, description="steps completed, in order")


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
