"""Approval gates: a run parks until people decide, on durable timers.

A gate opens (if its condition holds), resolves its first tier's approvers on the worker, publishes
itself in visibility (search attributes, for the inbox) and notifies; decisions arrive as the `decide`
update (validated: see ensemble/gates.py) or the `decision` signal. When a tier's deadline passes the
gate escalates to the next tier; after the last one `on_timeout` applies. Approve continues the run,
reject fails it (or continues, with `on_reject: continue`), request changes rewinds to `changes_to`.
While parked the run holds nothing on a worker but a cache slot, and is replayed from history if it
has been evicted when the decision comes.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Any, cast

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from ensemble.workflows.engine import BUDGET_GATE, FlowRun, Rewind, failure_message, pattern

with workflow.unsafe.imports_passed_through():
    from ensemble.logic.gates import OpenGate
    from ensemble.logic.proofs import digest
    from ensemble.logic.state import StateError, resolve
    from ensemble.spec import GROUP_PREFIX, GateEvent, GateSpec, GateStep, GateWhen, protocol
    from ensemble.spec import protocol as attributes
    from ensemble.spec.gate import TierTrust

RESOLVE = protocol.RESOLVE_APPROVERS
RESOLVE_TRUST = protocol.RESOLVE_APPROVER_KEYS
# Runs started before proven decisions existed replay without it: their gates believe names and
# take min(quorum, people) as before.
PROVEN_PATCH = "ensemble-proven-decisions"
# Runs started before it publish their open gates without the tier's groups (the inbox then finds
# a gate only by the names of its people).
GROUPS_PATCH = "ensemble-pending-groups"
NOTIFY = protocol.NOTIFY
_RESOLVE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10), maximum_attempts=5
)
_NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=1), maximum_attempts=6
)


def _holds(run: FlowRun, when: Any, path: str) -> bool:
    try:
        if isinstance(when, GateWhen):
            return when.holds(resolve(when.value, run.state.values))
        return bool(resolve(when, run.state.values))
    except StateError as err:
        raise ApplicationError(f"gate '{path}': its condition: {err}", type="StateError", non_retryable=True) from err


def publish(run: FlowRun) -> None:
    """Show the run's open gates in visibility, for `starter.py pending` (cleared when none)."""
    if not run.request.inbox:
        return
    open_gates = run.gates.pending()
    if open_gates:
        people = sorted({p for g in open_gates for p in g["approvers"]})
        if workflow.patched(GROUPS_PATCH):  # a member of a tier's group (an identity provider's claim) finds it too
            groups = {gate.path: gate.groups() for gate in run.gates.open.values()}
            for g in open_gates:
                g["groups"] = groups.get(g["path"], [])
            people += sorted({f"{GROUP_PREFIX}{n}" for g in open_gates for n in g["groups"]})
        workflow.upsert_search_attributes(
            [
                attributes.GATES.value_set(sorted({g["gate"] for g in open_gates})),
                attributes.APPROVERS.value_set(people),
                attributes.PENDING.value_set(json.dumps(open_gates, sort_keys=True)),
            ]
        )
    else:
        workflow.upsert_search_attributes(
            [attributes.GATES.value_unset(), attributes.APPROVERS.value_unset(), attributes.PENDING.value_unset()]
        )


def _notify(run: FlowRun, gate: OpenGate, event: str) -> None:
    """Post the gate event without holding the run up; the flow awaits notifications before it ends."""
    assert gate.opened_at is not None  # set by enter_tier, which runs before every notification
    note = GateEvent(
        event=event,
        run_id=workflow.info().workflow_id,
        flow=run.flow.name,
        gate=gate.name,
        path=gate.path,
        tier=gate.tier,
        approvers=gate.approvers,
        quorum=gate.quorum,
        opened_at=gate.opened_at.isoformat(timespec="seconds"),
        deadline=gate.deadline.isoformat(timespec="seconds") if gate.deadline else None,
        show=_shown(run, gate),
        status=gate.outcome or "open",
        decisions=gate.decisions,
    )

    activity_id = f"{gate.path}@{event}{len(run.notifications) + 1}"

    async def post() -> None:
        try:
            await workflow.execute_activity(
                NOTIFY,
                note,
                activity_id=activity_id,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=_NOTIFY_RETRY,
                summary=f"notify · gate {gate.name} {event}",
            )
        except ActivityError as err:  # the gate works without its notification; the failure is on record
            workflow.logger.warning("notification for gate %s failed: %s", gate.name, failure_message(err))

    run.notifications.append(asyncio.ensure_future(post()))


def _shown(run: FlowRun, gate: OpenGate) -> Any:
    return _shown_by(run, gate.spec)


def _shown_by(run: FlowRun, spec: GateSpec) -> Any:
    if spec.show is None:
        return None
    try:
        return resolve(spec.show, run.state.values)
    except StateError:
        return None


@pattern(GateStep)
async def run_gate(run: FlowRun, step: GateStep, path: str) -> Any:
    spec = step.gate
    if spec.when is not None and not _holds(run, spec.when, path):
        record = {"gate": step.name, "path": path, "status": "skipped"}
        run.write(step.output, step.name, record, path)
        run.completed.append(path)
        return record
    if spec.show is not None and (size := run.too_large(_shown_by(run, spec))) is not None:  # no payload store
        raise ApplicationError(
            f"gate '{step.name}' not opened: "
            + run.too_large_reason("what it shows (`show:`)", size, "show less (a summary, or a reference)"),
            type="PayloadTooLarge",
            non_retryable=True,
        )
    gate = run.gates.start(step, path)
    proven = workflow.patched(PROVEN_PATCH)
    if proven:
        gate.identity = run.flow.identity
        gate.run_id = workflow.info().workflow_id
        gate.digest = digest(_shown(run, gate))  # what approvers are shown, as their proofs must bind it
    for index, tier in enumerate(spec.tiers):
        trust: TierTrust | None = None
        if proven:  # the people and their public keys, recorded in history; an unmeetable quorum fails here
            trust = await workflow.execute_activity(
                RESOLVE_TRUST,
                {
                    "approvers": tier.approvers,
                    "quorum": tier.quorum,
                    "gate": path,
                    "round": gate.round,
                    "tier": index + 1,
                    "digest": gate.digest,
                },
                result_type=TierTrust,
                activity_id=f"{path}@approvers{gate.round}.{index + 1}",
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=_RESOLVE_RETRY,
                summary=f"approvers · gate {step.name} tier {index + 1}",
            )
            people, quorum = trust.people, tier.quorum
        else:
            people = await workflow.execute_activity(
                RESOLVE,
                tier.approvers,
                result_type=list[str],
                activity_id=f"{path}@approvers{gate.round}.{index + 1}",
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=_RESOLVE_RETRY,
                summary=f"approvers · gate {step.name} tier {index + 1}",
            )
            quorum = min(tier.quorum, len(people))
        now = workflow.now()
        deadline = now + timedelta(seconds=tier.timeout) if tier.timeout else None
        gate.enter_tier(index + 1, people, quorum, now, deadline, trust)
        publish(run)
        _notify(run, gate, "opened" if index == 0 else "escalated")
        try:
            await workflow.wait_condition(lambda: gate.outcome is not None, timeout=tier.timeout)
            break
        except asyncio.TimeoutError:
            continue
    if gate.outcome is None:  # the ladder ran out: the declared default applies
        default = {"approve": "approved", "reject": "rejected", "fail": "timed_out"}[spec.on_timeout]
        # only a tier with a timeout (hence a deadline) ends its wait without an outcome
        deadline = cast(datetime, gate.deadline)
        gate.settle(default, "timeout", workflow.now(), f"no decision by {deadline.isoformat(timespec='seconds')}")
    record = run.gates.close(gate)
    publish(run)
    _notify(run, gate, "decided")
    run.write(step.output, step.name, record, path)
    if gate.outcome == "changes_requested":
        raise Rewind(spec.changes_to or "", step.name)
    if gate.outcome == "timed_out":
        raise ApplicationError(
            f"gate '{step.name}' had no decision by its last deadline ({record['decided_at']})",
            type="GateTimedOut",
            non_retryable=True,
        )
    if gate.outcome == "rejected" and spec.on_reject == "fail":
        why = f": {gate.comment}" if gate.comment else ""
        raise ApplicationError(
            f"gate '{step.name}' rejected by {gate.decided_by}{why}", type="GateRejected", non_retryable=True
        )
    run.completed.append(path)
    return record


async def raise_budget(run: FlowRun, why: str) -> None:
    """Park the run at gate `budget` until people raise its exhausted budget. Parallel branches
    that run out together wait for the same gate."""
    if run.gates.find_open("budget") is not None:
        await workflow.wait_condition(lambda: run.gates.find_open("budget") is None)
        return
    budget = run.budget
    assert budget is not None  # FlowRun.budget_exhausted waits here only for a run with a budget
    raises = sum(1 for r in run.gates.records if r["gate"] == "budget")
    step = GateStep(
        name="budget",
        gate=GateSpec(
            approvers=budget.approvers,
            quorum=budget.quorum,
            timeout=budget.timeout,
            on_timeout="fail",
            show={"why": why},
        ),
        output=f"budget_gate_{raises + 1}" if raises else "budget_gate",
    )
    await run_gate(run, step, "budget" if not raises else f"budget#{raises + 1}")
    original = run.flow.budget
    assert original is not None  # run.budget is a copy of it
    # run.budget's limits are the flow's, only ever raised here: set in one when set in the other
    if budget.tokens is not None:
        budget.tokens += budget.raise_tokens or cast(int, original.tokens)
    if budget.usd is not None:
        budget.usd += budget.raise_usd or cast(float, original.usd)


BUDGET_GATE.append(raise_budget)
