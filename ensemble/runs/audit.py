"""Re-verify every decision of a run from its history, offline (`starter.py audit`).

The history holds everything needed: the flow (its `identity` mode) in the first event; for each
gate tier, what the worker resolved (people and public keys) and the digest of what the gate
showed, as the `ensemble.approvers.trust` activity's input and result; and each decision as the
accepted `decide` update (or `decision` signal) with its proof. Each proof is checked again with
the workflow's clock of that moment (the start of the workflow task that accepted it). A history
edited after the fact (alice's approval rewritten to bob, a digest changed) fails here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.converter import DataConverter

from ensemble.logic.proofs import ProofRefused, binding, verify
from ensemble.spec import GateDecision, RunRequest
from ensemble.spec.gate import TierTrust

RESOLVE_TRUST = "ensemble.approvers.trust"


@dataclass
class AuditedDecision:
    gate: str
    round: int | None
    tier: int | None
    by: str
    decision: str
    at: str
    via: str  # update | signal
    identity: str  # proven | asserted
    verified: bool
    subject: str | None = None
    key_id: str | None = None
    digest: str | None = None
    problem: str | None = None


@dataclass
class AuditReport:
    run_id: str
    flow: str
    identity: str
    decisions: list[AuditedDecision] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(d.verified or d.identity == "asserted" for d in self.decisions)

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "flow": self.flow, "identity": self.identity, "ok": self.ok,
                "decisions": [asdict(d) for d in self.decisions]}  # fmt: skip


@dataclass
class _Tier:
    gate: str
    round: int
    tier: int
    digest: str | None
    trust: TierTrust | None = None


async def _decode_one(converter: DataConverter, payloads: Any, type_hint: Any) -> Any:
    values = await converter.decode(list(payloads), [type_hint] if type_hint else None)
    return values[0] if values else None


async def audit_history(history: WorkflowHistory, converter: DataConverter) -> AuditReport:
    run_id = history.workflow_id
    request: RunRequest | None = None
    scheduled: dict[int, _Tier] = {}
    tiers: dict[str, _Tier] = {}  # gate path -> its current tier
    seen: set[str] = set()
    clock: datetime | None = None
    report: AuditReport | None = None
    for event in history.events:
        kind = event.event_type
        when = event.event_time.ToDatetime().replace(tzinfo=None) if event.HasField("event_time") else None
        if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            attrs = event.workflow_execution_started_event_attributes
            request = await _decode_one(converter, attrs.input.payloads, RunRequest)
            run_id = attrs.workflow_id or _recorded_run_id(history.events, converter) or run_id
            report = AuditReport(run_id=run_id, flow=request.flow.name, identity=request.flow.identity)
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            clock = event.event_time.ToDatetime().replace(tzinfo=timezone.utc)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            if attrs.activity_type.name == RESOLVE_TRUST:
                spec = await _decode_one(converter, attrs.input.payloads, dict)
                scheduled[event.event_id] = _Tier(
                    spec.get("gate", ""), int(spec.get("round", 0)), int(spec.get("tier", 0)), spec.get("digest")
                )
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            attrs = event.activity_task_completed_event_attributes
            tier = scheduled.get(attrs.scheduled_event_id)
            if tier is not None:
                tier.trust = await _decode_one(converter, attrs.result.payloads, TierTrust)
                tiers[tier.gate] = tier
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            attrs = event.workflow_execution_update_accepted_event_attributes
            req = attrs.accepted_request
            if req.input.name == "decide":
                d = await _decode_one(converter, req.input.args.payloads, GateDecision)
                report.decisions.append(_check(run_id, d, "update", when, clock, tiers, seen, request))
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            attrs = event.workflow_execution_signaled_event_attributes
            if attrs.signal_name == "decision":
                try:
                    d = await _decode_one(converter, attrs.input.payloads, GateDecision)
                except Exception:  # a malformed signal was dropped by the run too
                    continue
                checked = _check(run_id, d, "signal", when, clock, tiers, seen, request)
                if checked.verified or checked.identity == "asserted":
                    report.decisions.append(checked)  # refused signals were dropped by the run: not decisions
    if report is None:
        raise ValueError(f"the history of {run_id} has no start event")
    return report


def _recorded_run_id(events: list[Any], converter: DataConverter) -> str | None:
    """The run id an exported history (which may not name it) was recorded under: every agent call
    carries it in its context."""
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            payloads = e.activity_task_scheduled_event_attributes.input.payloads
            try:
                value = converter.payload_converter.from_payload(payloads[0]) if payloads else None
            except Exception:  # not a payload Ensemble wrote
                continue
            run_id = value.get("context", {}).get("run_id") if isinstance(value, dict) else None
            if isinstance(run_id, str) and run_id:
                return run_id
    return None


def _check(
    run_id: str,
    d: GateDecision,
    via: str,
    when: datetime | None,
    clock: datetime | None,
    tiers: dict[str, _Tier],
    seen: set[str],
    request: RunRequest | None,
) -> AuditedDecision:
    tier = tiers.get(d.gate) or next((t for path, t in tiers.items() if path.rsplit(".", 1)[-1] == d.gate), None)
    identity = request.flow.identity if request and tier is not None else "asserted"
    out = AuditedDecision(gate=d.gate, round=tier.round if tier else None, tier=tier.tier if tier else None, by=d.by,
                          decision=d.decision, at=when.isoformat(timespec="seconds") if when else "", via=via,
                          identity=identity, verified=False, digest=tier.digest if tier else None)  # fmt: skip
    if identity == "asserted":
        out.problem = "asserted: the flow believes names (identity: asserted), nothing to verify"
        return out
    if tier is None or tier.trust is None or clock is None:
        out.problem = "no tier with recorded keys was open for this decision"
        return out
    if not d.proof:
        out.problem = "no proof"
        return out
    expected = binding(run_id, tier.gate, tier.round, tier.tier, d, tier.digest or "")
    try:
        proof = verify(d.proof, d, expected, tier.trust, clock, seen)
    except ProofRefused as err:
        out.problem = str(err)
        return out
    seen.add(proof.jti)
    out.verified, out.subject, out.key_id = True, proof.subject, proof.key_id
    return out


async def audit_run(client: Client, run_id: str) -> AuditReport:
    history = await client.get_workflow_handle(run_id).fetch_history()
    return await audit_history(history, client.data_converter)
