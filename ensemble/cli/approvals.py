"""Commands for people: `pending` (the inbox), `approve`, `reject` and `request-changes`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ensemble.runtime import connection as temporal
from ensemble.runs import inbox
from ensemble.runs.history import get_run
from ensemble.spec import GateDecision
from ensemble.spec.errors import InputError


def _waiting_line(run_id: str, gate: dict[str, Any]) -> str:
    deadline = f"; deadline {gate['deadline']}" if gate.get("deadline") else ""
    who = ", ".join(gate["approvers"])
    return (f"run {run_id} is waiting for approval at gate '{gate['gate']}' (tier {gate['tier']}, {gate['approvals']} of "
            f"{gate['quorum']} approvals from {who}{deadline}); decide with `python starter.py approve {run_id} "
            f"--gate {gate['gate']} --by {gate['approvers'][0]}` (or reject / request-changes)")  # fmt: skip


def print_outcome(outcome: dict[str, Any], as_json: bool) -> int:
    """Print a settled run: ended (the result) or parked at a gate (how to decide). Exit code."""
    from ensemble.cli.app import _emit_json, _print_result

    if outcome["status"] != "waiting_for_approval":
        return _print_result(outcome, as_json)
    if as_json:
        _emit_json(outcome)
    else:
        for gate in outcome["pending"]:
            print(_waiting_line(outcome["run_id"], gate))
    return 0


async def cmd_pending(args: argparse.Namespace) -> int:
    from ensemble.cli.app import _console, _emit_json

    client = await temporal.connect()
    await temporal.ensure_search_attributes(client)  # a cluster that has never seen Ensemble has an empty inbox
    rows = await inbox.pending(client, args.approver)
    if args.json:
        _emit_json([{k: r.get(k) for k in ("run_id", "flow", "gate", "approvers", "tier", "opened_at", "deadline", "quorum", "approvals",
                                           "round", "identity", "digest")}
                    for r in rows])  # fmt: skip
        return 0
    if not rows:
        print("nothing is waiting for approval" + (f" by {args.approver}" if args.approver else ""))
        return 0
    from rich.table import Table

    table = Table()
    for col in ("run", "flow", "gate", "tier", "approvers", "approvals", "opened", "deadline"):
        table.add_column(col, no_wrap=col != "approvers")
    for r in rows:
        table.add_row(r["run_id"], r.get("flow") or "?", r["gate"], str(r["tier"]), ", ".join(r["approvers"]),
                      f"{r['approvals']}/{r['quorum']}", r.get("opened_at") or "", r.get("deadline") or "-")  # fmt: skip
    _console().print(table)
    return 0


async def cmd_decide(args: argparse.Namespace) -> int:
    from ensemble.cli.app import _emit_json, keep_running

    client = await temporal.connect()
    handle, desc = await get_run(client, args.run_id)
    decision = GateDecision(gate=args.gate, decision=args.decision, by=args.by, comment=args.comment or "")
    # A decision is validated by the run itself, so some worker must serve it while we wait.
    async with keep_running(client, args.run_id, desc.task_queue, quiet=True):
        result = await inbox.decide(client, args.run_id, decision, _token(args))
        if not args.json:
            verb = {"approve": "approval", "reject": "rejection", "request_changes": "change request"}[args.decision]
            print(f"{verb} by {args.by} recorded on gate '{result.gate}' of run {args.run_id}: "
                  f"{result.status.replace('_', ' ')} ({result.approvals} of {result.quorum} approvals)")  # fmt: skip
        if args.no_wait or result.status == "open":
            if args.json:
                _emit_json({"run_id": args.run_id, **result.model_dump()})
            return 0
        outcome = await inbox.settle(client, handle)
    if args.json:
        _emit_json({"run_id": args.run_id, **result.model_dump(), "run": outcome})
        return 0 if outcome["status"] in ("completed", "waiting_for_approval") else 1
    return print_outcome(outcome, False)


def _token(args: argparse.Namespace) -> str | None:
    """--token TOKEN, or --token @FILE (a token from the identity provider)."""
    raw = getattr(args, "token", None)
    if not raw:
        return None
    if raw.startswith("@"):
        try:
            return Path(raw[1:]).read_text().strip()
        except OSError as err:
            raise InputError(f"cannot read token file {raw[1:]}: {err.strerror or err}") from None
    return raw


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("pending", help="runs waiting on people, across the namespace")
    s.add_argument("--approver", help="only gates this user may decide now")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_pending)
    for name, decision, what in (
        ("approve", "approve", "approve a gate"),
        ("reject", "reject", "reject a gate"),
        ("request-changes", "request_changes", "send the run back to the gate's changes_to step with a comment"),
    ):
        s = sub.add_parser(name, help=what)
        s.add_argument("run_id")
        s.add_argument("--gate", required=True, help="the gate's name")
        s.add_argument("--by", required=True, help="who decides (must be an approver of the gate's current tier)")
        s.add_argument("--comment", required=decision == "request_changes", help="why (required to request changes)")
        s.add_argument(
            "--token", metavar="TOKEN|@FILE",
            help="the decision's proof from your identity provider (default: signed with --by's key from `keys init`)",
        )  # fmt: skip
        s.add_argument("--no-wait", action="store_true", help="return once the decision is recorded")
        s.add_argument("--json", action="store_true")
        s.set_defaults(fn=cmd_decide, decision=decision)
