"""The shared shapes of Ensemble: agent specs, flow specs, run requests and records.

Both workflows and activities import this module, so it imports nothing heavier than pydantic.
Everything a run needs to be interpreted (the flow and every agent spec it uses) travels in the
workflow input, so a run's history alone is enough to replay it.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, WithJsonSchema, Discriminator, Field, Tag, field_validator, model_validator

NAME_RE = r"^[A-Za-z][A-Za-z0-9_.-]*$"
DEFAULT_TASK_QUEUE = "ensemble"
WORKFLOW_NAME = "EnsembleFlow"

Effect = Literal["read", "idempotent", "irreversible"]
Reducer = Literal["replace", "append", "extend", "merge", "add"]
# The executor kinds this release runs. A new kind adds its name here and registers an executor
# in `activities.executors`; nothing else in the engine changes.
AgentKind = Literal["function", "http", "llm"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetrySpec(_Strict):
    """How Temporal retries an agent. Bounded by default: a run never retries forever."""

    initial_interval_s: float = Field(1.0, gt=0)
    backoff_coefficient: float = Field(2.0, ge=1)
    max_interval_s: float = Field(30.0, gt=0)
    max_attempts: int = Field(3, ge=1, le=100)
    non_retryable_errors: list[str] = Field(default_factory=list)


LLM_PROVIDERS = ("openai", "anthropic", "azure", "ollama")
MODEL_RE = r"^[a-z][a-z0-9_-]*:\S+$"
TOOL_NAME_RE = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"  # what model providers accept
OUTPUT_TOOL = "final_answer"  # reserved: how an Anthropic model hands over structured output


class ToolSpec(_Strict):
    """A tool llm agents may call through the model (docs/llm.md): a Python function or an HTTP
    endpoint. An agent may call only the tools its `tools:` list names."""

    name: str = Field(pattern=TOOL_NAME_RE)
    description: str = ""
    kind: Literal["function", "http"] = "function"
    handler: str | None = Field(None, description="kind=function: 'package.module:callable'")
    url: str | None = Field(None, description="kind=http: the endpoint the arguments are POSTed to as JSON")
    headers: dict[str, str] = Field(default_factory=dict, description="kind=http: header values may use ${env:NAME}")
    input_schema: dict[str, Any] | None = Field(None, description="JSON Schema of the arguments (default: the handler's signature)")
    effect: Effect = Field("read", description="irreversible tools get an idempotency key that is the same on every retry")
    timeout_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _kind_fields(self) -> ToolSpec:
        if self.name == OUTPUT_TOOL:
            raise ValueError(f"tool name '{OUTPUT_TOOL}' is reserved")
        if self.kind == "function" and (not self.handler or not re.match(r"^[\w.]+:[\w.]+$", self.handler)):
            raise ValueError("a function tool needs handler: 'package.module:callable'")
        if self.kind == "http" and (not self.url or not re.match(r"^https?://", self.url)):
            raise ValueError("an http tool needs url: 'http(s)://...'")
        return self


class LlmSpec(_Strict):
    """How a model runs an agent: its instructions, its prompt and its limits (docs/llm.md)."""

    instructions: str = Field("", description="the system prompt")
    prompt: str | None = Field(
        None, description="the user message: text with {path} placeholders over the step input (default: the input as JSON)"
    )
    output_model: str | None = Field(
        None, description="'package.module:Model' the reply is validated into (default: output_schema, else the handler's return model)"
    )
    max_tool_turns: int = Field(8, ge=0, le=100, description="model replies with tool calls before a final answer is required")
    max_reasks: int = Field(2, ge=0, le=10, description="how often a reply that fails the output schema is sent back")
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int = Field(2048, ge=1, description="the most tokens of one reply")


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
    tools: list[str] = Field(default_factory=list, description="the tools this agent may call (llm agents)")
    effect: Effect = "read"
    task_queue: str | None = Field(None, description="run on workers of this queue (default: the flow's)")
    # kind=llm: "provider:model" (default: the worker's ENSEMBLE_LLM). `llm` holds the prompt and
    # limits; on a function agent it is the model-backed version the worker runs when it has
    # ENSEMBLE_LLM set. `tool_specs` are the declarations of `tools`, filled in by the flow loader.
    model: str | None = Field(None, description="kind=llm: 'provider:model', e.g. openai:gpt-4o-mini")
    llm: LlmSpec | None = None
    tool_specs: list[ToolSpec] = Field(default_factory=list)
    fast: bool = Field(
        False,
        description="a short agent (well under its timeout): run it as a Temporal local activity on the "
        "worker of the run (see docs/performance.md for the trade-offs)",
    )

    @model_validator(mode="after")
    def _fast_fields(self) -> AgentSpec:
        # A local activity runs on the worker that runs the workflow and cannot heartbeat.
        if self.fast and self.task_queue:
            raise ValueError("a fast agent runs on the run's own worker: remove task_queue or fast")
        if self.fast and self.heartbeat_s:
            raise ValueError("a fast agent cannot heartbeat: remove heartbeat_s or fast")
        return self

    @model_validator(mode="after")
    def _kind_fields(self) -> AgentSpec:
        if self.kind == "function":
            if not self.handler or not re.match(r"^[\w.]+:[\w.]+$", self.handler):
                raise ValueError("a function agent needs handler: 'package.module:callable'")
        elif self.kind == "http":
            if not self.url or not re.match(r"^https?://", self.url):
                raise ValueError("an http agent needs url: 'http(s)://...'")
            if self.llm is not None:
                raise ValueError("llm: is for llm agents and function agents, not http agents")
        elif self.kind == "llm":
            if self.handler or self.url:
                raise ValueError("an llm agent has model: 'provider:model' and llm: {instructions, prompt...}, not handler or url")
            self.llm = self.llm or LlmSpec()
            if "timeout_s" not in self.model_fields_set:
                self.timeout_s = 300.0  # a tool loop of several model calls
            if self.heartbeat_s is None and not self.fast:
                self.heartbeat_s = 20.0  # the transcript is heartbeated: a retry resumes from it
        if self.model is not None:
            if self.kind != "llm":
                raise ValueError("model: is for llm agents (a function agent's llm: runs on the worker's ENSEMBLE_LLM)")
            if not re.match(MODEL_RE, self.model):
                raise ValueError(f"model '{self.model}' is not 'provider:model' (e.g. openai:gpt-4o-mini)")
            if self.model.split(":", 1)[0] not in LLM_PROVIDERS:
                raise ValueError(f"model '{self.model}': the provider is one of {', '.join(LLM_PROVIDERS)}")
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
    fallback: str | None = Field(None, pattern=NAME_RE, description="agent run on the same input when `agent` fails for good")
    compensate: str | None = Field(
        None, pattern=NAME_RE, description="agent that undoes this step when the run later fails or is cancelled (docs/failures.md)"
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


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> float:
    """Seconds from a number of seconds or text like '90s', '30m', '12h', '3d', '1w'."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        m = _DURATION_RE.match(str(value))
        if not m:
            raise ValueError(f"'{value}' is not a duration: use seconds or e.g. '45s', '30m', '12h', '3d', '1w'")
        seconds = float(m.group(1)) * _UNIT_S[m.group(2) or "s"]
    if seconds <= 0:
        raise ValueError("a duration must be more than zero")
    return seconds


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema({"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*[smhdw]?\s*$"}],
                    "description": "seconds, or text like '45s', '30m', '12h', '3d', '1w'"}),
]  # fmt: skip
GROUP_PREFIX = "group:"
APPROVER_RE = r"^(group:)?[A-Za-z0-9][A-Za-z0-9_.@+-]*$"


class GateTier(_Strict):
    """Who may decide, how many of them must approve, and for how long before escalating."""

    approvers: list[Annotated[str, Field(pattern=APPROVER_RE)]] = Field(min_length=1, description="users, or group:NAME from the approvers file")
    quorum: int = Field(1, ge=1, description="distinct approvals needed")
    timeout: Duration | None = Field(None, description="how long this tier has: seconds or '3d', '12h'... (none: no deadline)")


GateCondition = Literal["equals", "not_equals", "gt", "gte", "lt", "lte", "in", "contains"]


class GateWhen(_Strict):
    """`value` (a template) compared with one operator, e.g. {value: $risk.high, gt: 0}."""

    value: Any
    equals: Any = None
    not_equals: Any = None
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None
    in_: list[Any] | None = Field(None, alias="in")
    contains: Any = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @property
    def operators(self) -> list[str]:
        return [k for k in ("equals", "not_equals", "gt", "gte", "lt", "lte", "in_", "contains") if getattr(self, k) is not None]

    @model_validator(mode="after")
    def _one_operator(self) -> GateWhen:
        if len(self.operators) != 1:
            raise ValueError("a condition has value: TEMPLATE and exactly one of equals, not_equals, gt, gte, lt, lte, in, contains "
                             "(with a value other than null: test for null with a plain template)")  # fmt: skip
        return self

    def holds(self, value: Any) -> bool:
        [op] = self.operators
        arg = getattr(self, op)
        try:
            return {
                "equals": lambda: value == arg,
                "not_equals": lambda: value != arg,
                "gt": lambda: value is not None and value > arg,
                "gte": lambda: value is not None and value >= arg,
                "lt": lambda: value is not None and value < arg,
                "lte": lambda: value is not None and value <= arg,
                "in_": lambda: value in arg,
                "contains": lambda: value is not None and arg in value,
            }[op]()
        except TypeError:
            return False


class GateSpec(_Strict):
    """A human approval gate. Tier 1 is `approvers`/`quorum`/`timeout` (or `tiers[0]`); when a tier's
    deadline passes the gate escalates to the next tier, and after the last one `on_timeout` applies."""

    when: GateWhen | str | None = Field(None, description="open only when this template is truthy, or a {value, OPERATOR} condition")
    approvers: list[Annotated[str, Field(pattern=APPROVER_RE)]] = Field(default_factory=list)
    quorum: int = Field(1, ge=1)
    timeout: Duration | None = None
    escalate: list[GateTier] = Field(default_factory=list, description="further tiers, in order")
    on_timeout: Literal["approve", "reject", "fail"] = "fail"
    on_reject: Literal["fail", "continue"] = Field(
        "fail", description="fail the run (compensations run), or continue with the rejection in the state"
    )
    changes_to: str | None = Field(None, pattern=NAME_RE, description="earlier step to go back to when changes are requested")
    max_rounds: int = Field(3, ge=1, le=20, description="how many times changes may be requested")
    show: Any = Field(None, description="template: what approvers are shown (in the inbox and notifications)")

    @model_validator(mode="after")
    def _tiers(self) -> GateSpec:
        if not self.approvers:
            raise ValueError("a gate needs approvers: [user, group:NAME, ...]")
        for i, tier in enumerate(self.tiers):
            plain = [a for a in tier.approvers if not a.startswith(GROUP_PREFIX)]
            if not any(a.startswith(GROUP_PREFIX) for a in tier.approvers) and tier.quorum > len(set(plain)):
                raise ValueError(f"tier {i + 1}: quorum {tier.quorum} is more than its {len(set(plain))} approvers")
        if self.escalate and any(t.timeout is None for t in self.tiers[:-1]):
            raise ValueError("every tier but the last needs a timeout before the gate can escalate")
        return self

    @property
    def tiers(self) -> list[GateTier]:
        return [GateTier(approvers=self.approvers, quorum=self.quorum, timeout=self.timeout), *self.escalate]


class GateStep(_Strict):
    """Wait for people to approve, reject or request changes (see docs/approvals.md)."""

    name: str = Field(pattern=NAME_RE)
    gate: GateSpec
    output: str | None = Field(None, description="state key for the gate's record (default: the gate name)")

    @property
    def step_name(self) -> str:
        return self.name


Decision = Literal["approve", "reject", "request_changes"]


class GateDecision(_Strict):
    """A person's decision on an open gate: the argument of the `decide` update (and signal)."""

    gate: str
    decision: Decision
    by: str = Field(min_length=1)
    comment: str = ""


GateEventKind = Literal["opened", "escalated", "decided"]


class GateEvent(_Strict):
    """What the notification activity posts when a gate opens, escalates or is decided (also how
    `status` reads a gate back from the history)."""

    event: GateEventKind
    run_id: str
    flow: str
    gate: str
    path: str
    tier: int
    approvers: list[str] = Field(default_factory=list)
    quorum: int = 1
    opened_at: str
    deadline: str | None = None
    show: Any = None
    status: str = "open"
    decisions: list[dict[str, Any]] = Field(default_factory=list)


class GateDecisionResult(_Strict):
    """What `decide` answers: the gate's state once the decision is counted."""

    gate: str
    status: str
    approvals: int
    quorum: int


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
    Union[
        Annotated[AgentStep, Tag("agent")],
        Annotated[SequenceStep, Tag("sequence")],
        Annotated[ParallelStep, Tag("parallel")],
        Annotated[ChatStep, Tag("chat")],
        Annotated[SupervisorStep, Tag("supervisor")],
        Annotated[GateStep, Tag("gate")],
    ],
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
        return refs + ([(("supervisor", "assembler"), sup.assembler)] if sup.assembler else [])
    if isinstance(step, ChatStep):
        refs = [(("chat", "participants", i), name) for i, name in enumerate(step.chat.participants)]
        if step.chat.selector != "round_robin":
            refs.append((("chat", "selector"), step.chat.selector))
        return refs
    return []


class Price(_Strict):
    """What a model costs, in USD per million tokens."""

    prompt: float = Field(ge=0)
    completion: float = Field(ge=0)


class BudgetSpec(_Strict):
    """A per-run limit on model use. Once the run's total reaches it, no further model-backed
    agent starts (docs/llm.md#budgets)."""

    tokens: int | None = Field(None, ge=1, description="total tokens (prompt + completion)")
    usd: float | None = Field(None, gt=0, description="money, priced with `prices`")
    prices: dict[str, Price] = Field(
        default_factory=dict, description="'provider:model', 'provider:*' or '*' -> USD per million tokens"
    )

    approvers: list[Annotated[str, Field(pattern=APPROVER_RE)]] = Field(
        default_factory=list, description="who may raise an exhausted budget: the run then waits at gate 'budget' instead of failing"
    )
    quorum: int = Field(1, ge=1)
    timeout: Duration | None = Field(None, description="how long the budget gate waits before the run fails")
    raise_tokens: int | None = Field(None, ge=1, description="tokens an approval adds (default: `tokens` again)")
    raise_usd: float | None = Field(None, gt=0, description="money an approval adds (default: `usd` again)")

    @model_validator(mode="after")
    def _limits(self) -> BudgetSpec:
        if self.tokens is None and self.usd is None:
            raise ValueError("a budget needs tokens: N and/or usd: AMOUNT")
        if self.usd is not None and not self.prices:
            raise ValueError("a budget in usd needs prices: {'provider:model': {prompt: USD_PER_1M, completion: USD_PER_1M}}")
        return self


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
    tools: list[ToolSpec] = Field(default_factory=list, description="tools the flow's llm agents may be allowed to call")
    llm: dict[str, LlmSpec] = Field(
        default_factory=dict, description="agent name -> the model-backed version of that function agent (see ENSEMBLE_LLM)"
    )
    budget: BudgetSpec | None = Field(None, description="a per-run limit on model tokens and/or money")

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
    inbox: bool = Field(
        True, description="publish open gates as search attributes for `pending`; off where they cannot be registered"
    )
    # A seeded run (a redrive or a fork, see docs/failures.md): recorded agent results by activity
    # id, used instead of running those agents again; the idempotency keys it inherits by activity
    # id; and the run it was seeded from.
    reuse: dict[str, AgentResult] = Field(default_factory=dict)
    idempotency_keys: dict[str, str] = Field(default_factory=dict)
    origin: str | None = None


class AgentContext(_Strict):
    """What an agent knows about the step it runs in."""

    run_id: str
    flow: str
    step: str
    agent: str
    attempt: int = 1
    # Only for agents with effect `irreversible`: the same for every attempt of this step, and in a
    # redrive or fork of the run, so the agent's service can refuse to do the effect twice.
    idempotency_key: str | None = None


class AgentCall(_Strict):
    """The activity input: the agent's spec, the step's resolved input, and the context."""

    agent: AgentSpec
    input: Any = None
    context: AgentContext


class Usage(_Strict):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ToolRefusal(_Strict):
    """A tool call the model asked for and the engine refused (the agent may not call that tool)."""

    tool: str
    reason: str
    turn: int = Field(description="which model reply asked for it (1 = the first)")


class AgentResult(_Strict):
    """The activity result: the agent's output and, for model-backed agents, token usage, the
    model that answered and the tool calls that were refused."""

    output: Any = None
    usage: Usage | None = None
    model: str | None = None
    refusals: list[ToolRefusal] = Field(default_factory=list)


RunRequest.model_rebuild()  # `reuse` holds AgentResults, defined after it
StepStatus = Literal["scheduled", "running", "retrying", "waiting", "completed", "failed", "canceled", "timed_out", "reused"]
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
    attempt_started_at: str | None = Field(None, description="when the last attempt started (earlier attempts and backoff came before)")
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
    approvals: list[dict[str, Any]] = Field(default_factory=list, description="every gate's record: decisions and escalations")


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
    usage: Usage | None = Field(None, description="the token usage of every step, summed (none when no step used a model)")
