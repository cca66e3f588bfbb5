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
from datetime import datetime
from typing import Any

from temporalio.client import Client, WorkflowHistory
from temporalio.converter import DataConverter

from ensemble.logic.proofs import ProofRefused, binding, verify
from ensemble.runs.history import fold_history, read_history
from ensemble.runs.recorded import RunHistory
from ensemble.spec import GateDecision, RunRequest
from ensemble.spec.gate import TierTrust


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
    asks_again: dict[str, Any] | None = None  # the rejected run this run asks again (`run --again`)
    flow_version: str | None = None  # NAME@DIGEST where the run names its flow's version (docs/flows.md)

    @property
    def ok(self) -> bool:
        return all(d.verified or d.identity == "asserted" for d in self.decisions)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "flow": self.flow,
            "flow_version": self.flow_version,
            "identity": self.identity,
            "ok": self.ok,
            "asks_again": self.asks_again,
            "decisions": [asdict(d) for d in self.decisions],
        }


@dataclass
class _Tier:
    gate: str
    round: int
    tier: int
    digest: str | None
    trust: TierTrust | None = None


async def audit_history(history: WorkflowHistory, converter: DataConverter) -> AuditReport:
    """Audit an exported history (no server needed)."""
    folded = await fold_history(history, converter)
    return audit(folded, run_id=folded.recorded_run_id or history.workflow_id)


async def audit_run(client: Client, run_id: str) -> AuditReport:
    return audit(await read_history(client, run_id), run_id=run_id)


def audit(h: RunHistory, *, run_id: str) -> AuditReport:
    """Every decision of the run, checked again against the keys its tiers recorded."""
    request = h.request
    if request is None and h.flow_version is not None:
        raise ValueError(
            f"the history of {run_id} names flow version {h.flow_version}, which this process does not "
            "know: deploy that flow here (ENSEMBLE_FLOWS, ENSEMBLE_FLOW_PATH), or audit the run on its server, or "
            "an export written by `history --out`"
        )
    if request is None:
        raise ValueError(f"the history of {run_id} has no flow run's start event")
    report = AuditReport(
        run_id=run_id,
        flow=request.flow.name,
        identity=request.flow.identity,
        asks_again=request.asks_again.model_dump() if request.asks_again else None,
        flow_version=h.flow_version,
    )
    opened = sorted([(k.at, k) for k in h.tier_keys], key=lambda pair: pair[0])
    seen: set[str] = set()
    for d in h.decisions:
        tiers: dict[str, _Tier] = {}  # gate path -> its tier open when the decision came
        for at, keys in opened:
            if at > d.at:
                break
            spec = keys.spec
            trust = TierTrust.model_validate(keys.trust) if isinstance(keys.trust, dict) else None
            tiers[spec.get("gate", "")] = _Tier(
                spec.get("gate", ""), int(spec.get("round", 0)), int(spec.get("tier", 0)), spec.get("digest"), trust
            )
        try:
            decision = GateDecision.model_validate(d.decision)
        except ValueError:
            continue  # not a decision the run could take either
        checked = _check(run_id, decision, d.via, d.at.replace(tzinfo=None), d.clock, tiers, seen, request)
        if d.via == "update" or checked.verified or checked.identity == "asserted":
            report.decisions.append(checked)  # refused signals were dropped by the run: not decisions
    return report


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
    out = AuditedDecision(
        gate=d.gate,
        round=tier.round if tier else None,
        tier=tier.tier if tier else None,
        by=d.by,
        decision=d.decision,
        at=when.isoformat(timespec="seconds") if when else "",
        via=via,
        identity=identity,
        verified=False,
        digest=tier.digest if tier else None,
    )
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
