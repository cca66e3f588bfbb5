"""`starter.py audit RUN_ID|HISTORY.json [--json]`: re-verify every decision of a run offline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from temporalio.client import WorkflowHistory

from ensemble.runs.audit import AuditReport, audit_history, audit_run
from ensemble.runtime import connection as temporal
from ensemble.runtime.converter import data_converter
from ensemble.spec.errors import InputError


async def cmd_audit(args: argparse.Namespace) -> int:
    from ensemble.cli.app import _console, _emit_json

    path = Path(args.run)
    if path.suffix == ".json" and path.exists():  # an exported history (`temporal workflow show --output json`)
        try:
            data = json.loads(path.read_text())
            history = WorkflowHistory.from_json(
                data.get("workflowId", path.stem) if isinstance(data, dict) else path.stem, data
            )
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"cannot read history file {path}: {err}") from None
        report = await audit_history(history, data_converter())
    else:
        report = await audit_run(await temporal.connect(), args.run)
    if args.json:
        _emit_json(report.as_dict())
    else:
        _print(report, _console())
    return 0 if report.ok else 1


def _print(report: AuditReport, console) -> None:
    from rich.table import Table

    verdict = "[green]every decision verified[/green]" if report.ok else "[red]VERIFICATION FAILED[/red]"
    console.print(f"run [bold]{report.run_id}[/bold] (flow {report.flow}, identity {report.identity}): {verdict}")
    if not report.decisions:
        console.print("no decisions on record")
        return
    table = Table("gate", "round", "tier", "by", "decision", "at", "via", "verified", "key", "digest", "problem")
    for d in report.decisions:
        verdict = "yes" if d.verified else ("asserted" if d.identity == "asserted" else "NO")
        place = (d.gate, str(d.round or ""), str(d.tier or ""))
        table.add_row(
            *place, d.by, d.decision, d.at, d.via, verdict, d.key_id or "", (d.digest or "")[:19], d.problem or ""
        )
    console.print(table)


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("audit", help="re-verify every decision of a run from its history (exit 1 if any fails)")
    s.add_argument("run", help="a run id, or an exported history file (.json)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_audit)
