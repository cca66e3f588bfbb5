"""`starter.py audit RUN_ID|HISTORY.json [--json]`: re-verify every decision of a run offline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table
from temporalio.client import WorkflowHistory

from ensemble.cli.output import console, emit_json
from ensemble.runs.audit import AuditReport, audit_history, audit_run
from ensemble.runtime import connection as temporal
from ensemble.runtime.converter import data_converter
from ensemble.runtime.payloads import external_storage, inline_stored
from ensemble.spec import AskedAgain
from ensemble.spec.errors import InputError


async def cmd_audit(args: argparse.Namespace) -> int:
    path = Path(args.run)
    if path.suffix == ".json" and path.exists():  # an exported history (`temporal workflow show --output json`)
        try:
            data = json.loads(path.read_text())
            history = WorkflowHistory.from_json(
                data.get("workflowId", path.stem) if isinstance(data, dict) else path.stem, data
            )
        except (OSError, ValueError, KeyError) as err:
            raise InputError(f"cannot read history file {path}: {err}") from None
        await inline_stored(history.events, external_storage(), str(path))  # values held by reference
        report = await audit_history(history, data_converter())
    else:
        report = await audit_run(await temporal.connect(), args.run)
    if args.json:
        emit_json(report.as_dict())
    else:
        _print(report, console())
    return 0 if report.ok else 1


def _print(report: AuditReport, out: Console) -> None:
    out.print(
        f"run [bold]{report.run_id}[/bold] (flow {report.flow_version or report.flow}, identity {report.identity}): "
        + ("[green]every decision verified[/green]" if report.ok else "[red]VERIFICATION FAILED[/red]")
    )
    if report.asks_again:
        out.print(AskedAgain.model_validate(report.asks_again).line(), markup=False, highlight=False)
    if not report.decisions:
        out.print("no decisions on record")
        return
    table = Table("gate", "round", "tier", "by", "decision", "at", "via", "verified", "key", "digest", "problem")
    for d in report.decisions:
        verdict = "yes" if d.verified else ("asserted" if d.identity == "asserted" else "NO")
        table.add_row(
            d.gate,
            str(d.round or ""),
            str(d.tier or ""),
            d.by,
            d.decision,
            d.at,
            d.via,
            verdict,
            d.key_id or "",
            (d.digest or "")[:19],
            d.problem or "",
        )
    out.print(table)


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("audit", help="re-verify every decision of a run from its history (exit 1 if any fails)")
    s.add_argument("run", help="a run id, or an exported history file (.json)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_audit)
