"""Approval gate bookkeeping: which gates of a run are open, who may decide now, what has been
decided. Pure and deterministic (times are passed in), so the flow workflow keeps it in memory and
unit tests can drive it directly. The waiting, timers and notifications are in workflows/gate.py."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ensemble.logic.proofs import ProofRefused, Verified, binding, recorded, verify
from ensemble.spec import GateDecision, GateDecisionResult, GateSpec, GateStep, child_steps
from ensemble.spec.gate import TierTrust


class GateRefused(ValueError):
    """A decision that cannot be taken; the message says why."""


def gate_names(steps: list[Any]) -> set[str]:
    def walk(items: list[Any]) -> Iterator[str]:
        for step in items:
            if isinstance(step, GateStep):
                yield step.name
            yield from walk([child for _, child in child_steps(step)])

    return set(walk(steps))


def _iso(when: datetime | None) -> str | None:
    return when.isoformat(timespec="seconds") if when else None


@dataclass
class OpenGate:
    name: str
    path: str
    spec: GateSpec
    round: int
    tier: int = 0
    approvers: list[str] = field(default_factory=list)
    quorum: int = 1
    opened_at: datetime | None = None
    tier_opened_at: datetime | None = None
    deadline: datetime | None = None
    decisions: list[dict[str, Any]] = field(default_factory=list)
    escalations: list[dict[str, Any]] = field(default_factory=list)
    outcome: str | None = None  # approved | rejected | changes_requested
    decided_by: str | None = None  # who settled it ("timeout" when the ladder ran out)
    decided_at: datetime | None = None
    comment: str = ""
    # Proven decisions (docs/security.md): "proven" gates take only decisions whose proof verifies
    # against `trust` (the keys recorded when the tier opened), bound to this run, gate, round,
    # tier and the digest of what the gate shows. "asserted": a name is believed (demos, and runs
    # recorded before proofs existed).
    identity: str = "asserted"
    trust: TierTrust | None = None
    digest: str | None = None
    run_id: str = ""

    def enter_tier(
        self,
        tier: int,
        people: list[str],
        quorum: int,
        now: datetime,
        deadline: datetime | None,
        trust: TierTrust | None = None,
    ) -> None:
        if self.tier:
            self.escalations.append({"from_tier": self.tier, "to_tier": tier, "at": _iso(now), "approvers": people})
        self.opened_at = self.opened_at or now
        self.tier, self.approvers, self.quorum = tier, people, quorum
        self.tier_opened_at, self.deadline = now, deadline
        self.trust = trust

    def expected(self, d: GateDecision) -> dict[str, Any]:
        """What a proof of decision `d` on this gate must bind."""
        return binding(self.run_id, self.path, self.round, self.tier, d, self.digest or "")

    def approvals(self) -> list[str]:
        return [d["by"] for d in self.decisions if d["decision"] == "approve" and d["tier"] == self.tier]

    def settle(self, outcome: str, by: str, now: datetime, comment: str = "") -> None:
        self.outcome, self.decided_by, self.decided_at, self.comment = outcome, by, now, comment

    def groups(self) -> list[str]:
        """The tier's groups (`group:NAME` approvers), as recorded when it opened: a proof whose
        identity provider's groups claim names one of them is an approver's."""
        return sorted(self.trust.groups) if self.trust is not None else []

    def summary(self) -> dict[str, Any]:
        """The open gate as the inbox lists it."""
        return {
            "gate": self.name,
            "path": self.path,
            "tier": self.tier,
            "approvers": list(self.approvers),
            "quorum": self.quorum,
            "approvals": len(self.approvals()),
            "opened_at": _iso(self.opened_at),
            "deadline": _iso(self.deadline),
            "round": self.round,
            "identity": self.identity,
            "digest": self.digest,
        }

    def record(self) -> dict[str, Any]:
        """The gate's entry on the run's record: every decision and escalation."""
        return {
            "gate": self.name,
            "path": self.path,
            "status": self.outcome or "open",
            "decided_by": self.decided_by,
            "decided_at": _iso(self.decided_at),
            "comment": self.comment,
            "round": self.round,
            "tier": self.tier,
            "identity": self.identity,
            "digest": self.digest,
            "opened_at": _iso(self.opened_at),
            "decisions": list(self.decisions),
            "escalations": list(self.escalations),
        }


class GateBook:
    """Every gate of one run: the open ones, rounds of requested changes, and closed records."""

    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.open: dict[str, OpenGate] = {}
        self.rounds: dict[str, int] = {}
        self.records: list[dict[str, Any]] = []
        self.refused = 0  # refused signals: counted, never kept (a flood must not grow memory)
        self.seen_proofs: set[str] = set()  # jti of every proof accepted on this run

    def start(self, step: GateStep, path: str) -> OpenGate:
        gate = OpenGate(name=step.name, path=path, spec=step.gate, round=self.rounds.get(path, 0) + 1)
        self.open[path] = gate
        return gate

    def close(self, gate: OpenGate) -> dict[str, Any]:
        self.open.pop(gate.path, None)
        if gate.outcome == "changes_requested":
            self.rounds[gate.path] = gate.round
        record = gate.record()
        self.records.append(record)
        return record

    def find_open(self, name: str) -> OpenGate | None:
        return next((g for g in self.open.values() if g.name == name), None)

    def find(self, name: str) -> OpenGate:
        if name in self.open:
            return self.open[name]
        matches = [g for g in self.open.values() if g.name == name]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise GateRefused(
                f"gate '{name}' is open at {len(matches)} places: name one of {', '.join(sorted(g.path for g in matches))}"
            )
        if name not in self.known and not any(name == r["path"] for r in self.records):
            listed = ", ".join(sorted(self.known)) or "none"
            raise GateRefused(f"this run has no gate '{name}' (its gates: {listed})")
        closed = [r for r in self.records if name in (r["gate"], r["path"])]
        if closed:
            last = closed[-1]
            raise GateRefused(
                f"gate '{name}' is not open: it was {last['status'].replace('_', ' ')} by {last['decided_by']}"
            )
        raise GateRefused(f"gate '{name}' is not open (the run has not reached it, or its condition did not hold)")

    def check(self, d: GateDecision, now: datetime | None = None) -> OpenGate:
        """The gate a decision is for, or GateRefused saying why it cannot be taken."""
        self.check_proof(d, now)
        return self._gate_for(d)

    def check_proof(self, d: GateDecision, now: datetime | None) -> Verified | None:
        """The verified proof of `d` (None on a gate that believes names), or GateRefused."""
        if why := d.too_big():
            raise GateRefused(why)
        gate = self._gate_for(d)
        if gate.identity != "proven":
            return None
        if not d.proof:
            raise GateRefused(
                f"gate '{gate.name}' takes proven decisions only: sign it (`starter.py approve ... --by {d.by}` signs with "
                f"{d.by}'s key from `starter.py keys init`, or pass a token from your identity provider with --token)"
            )
        if gate.trust is None or now is None:
            raise GateRefused(f"gate '{gate.name}' has no keys recorded to check a proof against")
        try:
            return verify(d.proof, d, gate.expected(d), gate.trust, now, self.seen_proofs)
        except ProofRefused as err:
            raise GateRefused(f"the proof of {d.by}'s decision is refused: {err}") from None

    def _gate_for(self, d: GateDecision) -> OpenGate:
        gate = self.find(d.gate)
        if gate.outcome is not None or not gate.tier:
            raise GateRefused(
                f"gate '{gate.name}' is not open: it was just {(gate.outcome or 'opened').replace('_', ' ')}"
            )
        if d.by not in gate.approvers and not (gate.identity == "proven" and gate.groups() and d.proof):
            # On a proven gate whose tier names groups, someone the approvers file does not list may
            # still be a member by their identity provider's groups claim: their proof says (verify).
            raise GateRefused(
                f"'{d.by}' is not an approver of gate '{gate.name}' at tier {gate.tier} (approvers: {', '.join(gate.approvers)})"
            )
        earlier = next((x for x in gate.decisions if x["by"] == d.by), None)
        if earlier:
            raise GateRefused(
                f"'{d.by}' already decided on gate '{gate.name}' ({earlier['decision'].replace('_', ' ')} at {earlier['at']})"
            )
        if d.decision == "request_changes":
            if not gate.spec.changes_to:
                raise GateRefused(
                    f"gate '{gate.name}' does not take change requests (it has no changes_to step): approve or reject"
                )
            if not d.comment.strip():
                raise GateRefused("a change request needs a comment saying what to change")
            if gate.round > gate.spec.max_rounds:
                raise GateRefused(
                    f"gate '{gate.name}' has had its {gate.spec.max_rounds} rounds of changes: approve or reject"
                )
        return gate

    def apply(self, d: GateDecision, now: datetime, *, accepted: bool = False) -> GateDecisionResult:
        """Count a decision. `accepted`: an update the validator already accepted, replayed from
        history: its proof is read back, not verified again, so a replay never depends on the
        verifying library behaving as it did when the decision was taken."""
        proof: Verified | None
        if accepted and d.proof and self._gate_for(d).identity == "proven":
            proof = recorded(d.proof)
            proof.subject = d.by  # the verified proof named `by` (whatever its subject claim)
        else:
            proof = self.check_proof(d, now)
        gate = self._gate_for(d)
        entry: dict[str, Any] = {
            "by": d.by,
            "decision": d.decision,
            "comment": d.comment,
            "at": _iso(now),
            "tier": gate.tier,
        }
        if gate.identity == "proven" and proof is not None:
            self.seen_proofs.add(proof.jti)
            # The token itself stays in the update's history event (the evidence `audit` re-checks),
            # out of the run's state, result and notifications.
            entry.update(
                identity="proven",
                verified=True,
                subject=proof.subject,
                key_id=proof.key_id,
                issuer=proof.issuer,
                jti=proof.jti,
                digest=gate.digest,
                round=gate.round,
            )
        elif gate.trust is not None:  # a run that declares `identity: asserted`: the record says so
            entry.update(identity="asserted", verified=False, digest=gate.digest, round=gate.round)
        gate.decisions.append(entry)
        if d.decision == "reject":
            gate.settle("rejected", d.by, now, d.comment)
        elif d.decision == "request_changes":
            gate.settle("changes_requested", d.by, now, d.comment)
        elif len(approved_by := gate.approvals()) >= gate.quorum:
            gate.settle("approved", ", ".join(approved_by), now, d.comment)
        return GateDecisionResult(
            gate=gate.name, status=gate.outcome or "open", approvals=len(gate.approvals()), quorum=gate.quorum
        )

    def pending(self) -> list[dict[str, Any]]:
        return [g.summary() for g in self.open.values() if g.tier and g.outcome is None]
