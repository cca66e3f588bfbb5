"""The shapes of approval gates: the gate step and its tiers, conditions, decisions and events
(docs/approvals.md). Re-exported by ensemble.spec."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

from ensemble.spec.base import NAME_RE, _Strict

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
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*[smhdw]?\s*$"},
            ],
            "description": "seconds, or text like '45s', '30m', '12h', '3d', '1w'",
        }
    ),
]
GROUP_PREFIX = "group:"
APPROVER_RE = r"^(group:)?[A-Za-z0-9][A-Za-z0-9_.@+-]*$"


class GateTier(_Strict):
    """Who may decide, how many of them must approve, and for how long before escalating."""

    approvers: list[Annotated[str, Field(pattern=APPROVER_RE)]] = Field(
        min_length=1, description="users, or group:NAME from the approvers file"
    )
    quorum: int = Field(1, ge=1, description="distinct approvals needed")
    timeout: Duration | None = Field(
        None, description="how long this tier has: seconds or '3d', '12h'... (none: no deadline)"
    )


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
        return [
            k
            for k in ("equals", "not_equals", "gt", "gte", "lt", "lte", "in_", "contains")
            if getattr(self, k) is not None
        ]

    @model_validator(mode="after")
    def _one_operator(self) -> GateWhen:
        if len(self.operators) != 1:
            raise ValueError(
                "a condition has value: TEMPLATE and exactly one of equals, not_equals, gt, gte, lt, lte, in, contains "
                "(with a value other than null: test for null with a plain template)"
            )
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

    when: GateWhen | str | None = Field(
        None, description="open only when this template is truthy, or a {value, OPERATOR} condition"
    )
    approvers: list[Annotated[str, Field(pattern=APPROVER_RE)]] = Field(default_factory=list)
    quorum: int = Field(1, ge=1)
    timeout: Duration | None = None
    escalate: list[GateTier] = Field(default_factory=list, description="further tiers, in order")
    on_timeout: Literal["approve", "reject", "fail"] = "fail"
    on_reject: Literal["fail", "continue"] = Field(
        "fail", description="fail the run (compensations run), or continue with the rejection in the state"
    )
    changes_to: str | None = Field(
        None, pattern=NAME_RE, description="earlier step to go back to when changes are requested"
    )
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


# Caps on one decision, checked by the update validator (and the signal handler) before anything
# is kept: a decision is a few lines, and a proof a signed token of a few kilobytes.
MAX_COMMENT_CHARS = 4000
MAX_PROOF_CHARS = 16000
MAX_NAME_CHARS = 200


class GateDecision(_Strict):
    """A person's decision on an open gate: the argument of the `decide` update (and signal).
    `proof` is a signed token (JWT) binding the decision to the run, gate, round, tier and the
    digest of what the gate shows (docs/security.md); flows with `identity: asserted` take none."""

    gate: str
    decision: Decision
    by: str = Field(min_length=1)
    comment: str = ""
    proof: str | None = None

    def too_big(self) -> str | None:
        """Why this decision is over the caps, or None."""
        if len(self.comment) > MAX_COMMENT_CHARS:
            return f"a comment is at most {MAX_COMMENT_CHARS} characters (this one has {len(self.comment)})"
        if len(self.by) > MAX_NAME_CHARS or len(self.gate) > MAX_NAME_CHARS:
            return f"gate and approver names are at most {MAX_NAME_CHARS} characters"
        if self.proof is not None and len(self.proof) > MAX_PROOF_CHARS:
            return f"a proof is at most {MAX_PROOF_CHARS} characters"
        return None


class IssuerTrust(_Strict):
    """An identity provider whose tokens prove approvers (OIDC/JWT): its public keys (a JWKS)."""

    issuer: str
    audience: str
    jwks: dict[str, Any]
    subject_claim: str = "sub"
    groups_claim: str | None = None
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "EdDSA"])


class TierTrust(_Strict):
    """What the worker resolved when a tier opened, recorded in the history: the people who may
    decide, and the public keys that prove them (per-approver keys, and identity providers)."""

    people: list[str]
    keys: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    issuers: list[IssuerTrust] = Field(default_factory=list)
    groups: dict[str, list[str]] = Field(
        default_factory=dict, description="the tier's groups as the approvers file resolved them"
    )
    source: str = ""


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
