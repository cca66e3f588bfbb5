"""Commands for people: `pending` (the inbox), `approve`, `reject` and `request-changes`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ensemble.cli.output import console, emit_json, print_outcome
from ensemble.cli.runs import server_broke
from ensemble.client import EnsembleClient
from ensemble.runs.history import get_run
from ensemble.runtime import connection as temporal
from ensemble.spec.errors import InputError


async def cmd_pending(args: argparse.Namespace) -> int:
    # connect() registers the search attributes: a cluster that has never seen Ensemble has an empty inbox
    groups = [g.strip() for item in args.group or [] for g in item.split(",") if g.strip()]
    if groups and not args.approver:
        raise InputError("--group needs --approver: the gates that person may decide, directly or through a group")
    rows = await (await EnsembleClient.connect()).pending(args.approver, groups)
    if args.json:
        keep = (
            "run_id",
            "flow",
            "gate",
            "approvers",
            "groups",
            "tier",
            "opened_at",
            "deadline",
            "quorum",
            "approvals",
            "round",
            "identity",
            "digest",
        )
        emit_json([{k: r.get(k) for k in keep} for r in rows])
        return 0
    if not rows:
        print("nothing is waiting for approval" + (f" by {args.approver}" if args.approver else ""))
        return 0
    from rich.table import Table  # for people only

    table = Table()
    for col in ("run", "flow", "gate", "tier", "approvers", "approvals", "opened", "deadline"):
        table.add_column(col, no_wrap=col != "approvers")
    for r in rows:
        table.add_row(
            r["run_id"],
            r.get("flow") or "?",
            r["gate"],
            str(r["tier"]),
            ", ".join([*r["approvers"], *(f"group:{g}" for g in r.get("groups") or [])]),
            f"{r['approvals']}/{r['quorum']}",
            r.get("opened_at") or "",
            r.get("deadline") or "-",
        )
    console().print(table)
    return 0


async def cmd_decide(args: argparse.Namespace) -> int:
    if not args.by.strip():
        raise InputError("--by needs the name of the person deciding")
    ensemble = EnsembleClient(await temporal.connect())
    _, desc = await get_run(ensemble.temporal, args.run_id)
    # A decision is validated by the run itself, so some worker must serve it while we wait.
    async with ensemble.serving(args.run_id, desc.task_queue, on_broken=server_broke):
        result = await ensemble.decide(
            args.run_id, args.gate, args.decision, by=args.by, comment=args.comment or "", token=_token(args)
        )
        if not args.json:
            verb = {"approve": "approval", "reject": "rejection", "request_changes": "change request"}[args.decision]
            print(
                f"{verb} by {args.by} recorded on gate '{result.gate}' of run {args.run_id}: "
                f"{result.status.replace('_', ' ')} ({result.approvals} of {result.quorum} approvals)"
            )
        if args.no_wait or result.status == "open":
            if args.json:
                emit_json({"run_id": args.run_id, **result.model_dump()})
            return 0
        outcome = (await ensemble.wait(args.run_id)).model_dump()
    if args.json:
        emit_json({"run_id": args.run_id, **result.model_dump(), "run": outcome})
    else:
        print_outcome(outcome, False)
    # The decision was accepted: that is this command's success, whatever the run then does
    # (a rejection fails the run when its flow says so; `status` shows it).
    return 0


def _person(value: str) -> str:
    if not value.strip() or any(ord(c) < 32 for c in value):
        raise argparse.ArgumentTypeError("a person's name: not empty, no control characters")
    return value.strip()


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
    s.add_argument(
        "--group",
        action="append",
        metavar="GROUP",
        help="with --approver: the groups the user is in (repeat, or comma-separated); gates of those groups too",
    )
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
        s.add_argument(
            "--by", required=True, type=_person, help="who decides (must be an approver of the gate's current tier)"
        )
        s.add_argument("--comment", required=decision == "request_changes", help="why (required to request changes)")
        s.add_argument(
            "--token",
            metavar="TOKEN|@FILE",
            help="the decision's proof from your identity provider (default: signed with --by's key from `keys init`)",
        )
        s.add_argument("--no-wait", action="store_true", help="return once the decision is recorded")
        s.add_argument("--json", action="store_true")
        s.set_defaults(fn=cmd_decide, decision=decision)
