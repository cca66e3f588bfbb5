"""What a run is given: the run request (the workflow's input: a flow with every agent it uses
resolved, and the run's input) and the agent call (an activity's input), with the compact form in
which every step writes the call to the run's history."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from pydantic import Field, SerializationInfo, SerializerFunctionWrapHandler, model_serializer, model_validator

from ensemble.spec import compact, compact_run, protocol, versions
from ensemble.spec.agent import AgentSpec
from ensemble.spec.base import _Strict
from ensemble.spec.models import DEFAULT_TASK_QUEUE, FlowSpec
from ensemble.spec.records import AgentResult, ToolVerdict


class AskedAgain(_Strict):
    """The rejected run a run asks again (`starter.py run FLOW --again RUN_ID`): people rejected
    it at `gate`; the new run is a run of its own, and the rejected one stays rejected."""

    run_id: str
    gate: str
    by: str
    why: str = ""
    at: str | None = None

    def line(self) -> str:
        why = f": {self.why}" if self.why else ""
        return f"asks again after rejected run {self.run_id} (rejected by {self.by} at gate '{self.gate}'{why})"


class RunRequest(_Strict):
    """The workflow input: a flow with every agent it uses resolved, and the run's input."""

    flow: FlowSpec
    # Each agent is written compact (its fields at their defaults left out, with the version of
    # the defaults it was written with: ensemble.spec.compact), so the start event a replay
    # decodes holds what the run was started with in about half the bytes.
    agents: compact.Agents
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
    # A new run that asks again after people rejected another run (not seeded from it); the
    # workflow does not read it: it is the run's record of which rejection it follows.
    asks_again: AskedAgain | None = None
    inline_limit: int | None = Field(
        None,
        description="without a payload store: the largest step input or outcome, in bytes of JSON, the run sends "
        "inline; a larger one fails the run (PayloadTooLarge). None: large values go by reference",
        # Left out when None: a request with a payload store is written as before the field, so
        # workers that predate it (a request is strict about its fields) still read it.
        exclude_if=lambda limit: limit is None,
    )

    # The request itself is written compact too: the flow's steps and settings and the request's
    # own fields without their values at the defaults, by a frozen table (ensemble.spec.compact_run).
    @model_serializer(mode="wrap", when_used="json")
    def _compact(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        # and names its flow version instead of carrying it where the run's start asked for that
        # (ensemble.spec.versions)
        return versions.write(compact_run.compact(handler(self)))

    @model_validator(mode="before")
    @classmethod
    def _expand(cls, data: Any) -> Any:
        return compact_run.expand(versions.read(data))


def without_duplicate_agents(request: RunRequest) -> RunRequest:
    """The request as the run's history records it: an agent the flow file defines travels once,
    in `agents` (every agent the run uses, resolved), not a second time in the flow's own list.
    Nothing reads the flow's copy once a run has started; an inline agent that differs from the
    resolved one, or that no step uses, stays."""
    kept = [a for a in request.flow.agents if request.agents.get(a.name) != a]
    if len(kept) == len(request.flow.agents):
        return request
    return request.model_copy(update={"flow": request.flow.model_copy(update={"agents": kept})})


def flow_version(request: RunRequest) -> dict[str, Any]:
    """The flow version a run of this request records (ensemble.spec.versions): its flow and
    agents as the start event writes them."""
    recorded = without_duplicate_agents(request)
    # the flow and agents alone: a run's input (up to 64 MB with a payload store) is not dumped for it
    return versions.body_of(
        RunRequest.model_construct(flow=recorded.flow, agents=recorded.agents).model_dump(mode="json")
    )


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


# Fields of an agent spec the activity never reads (the workflow uses them to schedule it), and
# those it reads from the activity's own info instead (`AgentCall.from_wire`): left out of the
# activity input, which every step writes to the run's history.
_WORKFLOW_ONLY = frozenset({"description", "role", "schedule_to_close_s", "task_queue"})
_FROM_INFO = frozenset({"name", "timeout_s", "heartbeat_s", "fast"})


def agent_wire(agent: AgentSpec) -> dict[str, Any]:
    """An agent's spec as its activity reads it: without the fields the activity never reads or
    learns from its own info, and without any field at its default (pydantic fills them in again)."""
    exclude = set(_WORKFLOW_ONLY | _FROM_INFO)
    if agent.kind == "function":
        # its handler's own types check input and output; only its model-backed version (`llm`)
        # reads the output schema
        exclude |= {"input_schema"} if agent.llm is not None else {"input_schema", "output_schema"}
    return agent.model_dump(mode="json", exclude_defaults=True, exclude=exclude)


# An agent step's input names its agent's spec by this prefix and a digest of `agent_wire`
# (`AgentCall.to_wire(..., by_digest=True)`); the spec itself is in the start event of the run
# that scheduled the step (`ensemble/activities/specs.py` reads it there).
SPEC_REF = "#"


def spec_digest(wire: dict[str, Any]) -> str:
    """A digest of an agent's wire spec (`agent_wire`): 144 bits of SHA-256 over its canonical
    JSON, so a worker may keep specs by digest across runs (no run can make another's digest name
    its own spec)."""
    canonical = json.dumps(wire, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()[:18]).decode()


class AgentCall(_Strict):
    """The activity input: the agent's spec, the step's resolved input, and the context.

    On the wire (`to_wire`, `from_wire`) it is compact: the spec without the fields the activity
    never reads or learns from its own info, every field at its default left out, and the context
    without what the activity's info says (run id = workflow id, agent = activity type, step =
    activity id without its `#` suffix, attempt; an idempotency key derived from run and activity id is marked `keyed`). An input in the full shape (runs scheduled by
    earlier releases) reads the same."""

    agent: AgentSpec
    input: Any = None
    context: AgentContext
    verdict: ToolVerdict | None = Field(None, description="continue after people decided about a held tool call")

    def to_wire(self, activity_id: str, workflow_id: str, *, by_digest: bool = False) -> dict[str, Any]:
        """The activity input for `activity_id` of run `workflow_id` (the activity type is the
        agent's name). `by_digest`: the agent's spec is named by its digest (`"#" + spec_digest`),
        for a workflow whose own input holds that spec."""
        wire_spec = agent_wire(self.agent)
        agent: dict[str, Any] | str = SPEC_REF + spec_digest(wire_spec) if by_digest else wire_spec
        ctx = self.context
        # The run id is sent only where it is not the run's own (a chat turn names its flow run):
        # the activity's info says the workflow id, and an exported history names its run in its
        # start event (`workflowId`), which audit and redrive of an exported run bind to.
        context: dict[str, Any] = {"flow": ctx.flow}
        if ctx.run_id != workflow_id:
            context["run_id"] = ctx.run_id
        if ctx.agent != self.agent.name:
            context["agent"] = ctx.agent
        if ctx.step != protocol.step_of(activity_id):
            context["step"] = ctx.step
        if ctx.idempotency_key is not None:
            if ctx.idempotency_key == protocol.idempotency_key(workflow_id, activity_id):
                context["keyed"] = True  # the activity derives the same key
            else:
                context["idempotency_key"] = ctx.idempotency_key  # inherited by a redrive or fork
        wire: dict[str, Any] = {"agent": agent, "context": context}
        if self.input is not None:
            wire["input"] = self.input
        if self.verdict is not None:
            wire["verdict"] = self.verdict.model_dump(mode="json", exclude_defaults=True)
        return wire

    @classmethod
    def from_wire(
        cls,
        data: dict[str, Any],
        *,
        workflow_id: str,
        activity_id: str,
        activity_type: str,
        attempt: int,
        timeout_s: float | None,
        heartbeat_s: float | None,
        is_local: bool,
    ) -> AgentCall:
        """The call an activity was given, compact or in the full shape, with what its info says."""
        agent = data.get("agent") or {}
        if not isinstance(agent, dict):  # a spec named by digest: resolved first (activities/specs.py)
            raise ValueError(f"the agent's spec is not given: {str(agent)[:40]}")
        agent = dict(agent)
        agent.setdefault("name", activity_type)
        if timeout_s:
            agent.setdefault("timeout_s", timeout_s)
        if heartbeat_s:
            agent.setdefault("heartbeat_s", heartbeat_s)
        if is_local:
            agent.setdefault("fast", True)
        context = dict(data.get("context") or {})
        if context.pop("keyed", False):
            context.setdefault("idempotency_key", protocol.idempotency_key(workflow_id, activity_id))
        context.setdefault("run_id", workflow_id)
        context.setdefault("agent", agent["name"])
        context.setdefault("step", protocol.step_of(activity_id))
        context["attempt"] = attempt
        return cls.model_validate({**data, "agent": agent, "context": context})
