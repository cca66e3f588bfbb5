"""How the CLI prints: JSON for scripts, rich tables and lines for people."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ensemble.runs.status import safe

if TYPE_CHECKING:
    from rich.console import Console


def emit_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def console() -> Console:
    from rich.console import Console  # for people only: commands printing JSON never load it

    console = Console()
    if not console.is_terminal:  # piped or captured: wide enough that tables stay readable
        console = Console(width=max(console.width, 140))
    return console


def print_result(outcome: dict[str, Any], as_json: bool) -> int:
    if as_json:
        emit_json(outcome)
    else:
        con = console()
        con.print(f"run [bold]{outcome['run_id']}[/bold]: {outcome['status']}")
        if outcome.get("error"):
            con.print(f"error: {safe(outcome['error'])}", markup=False)
        if outcome.get("result") is not None:
            con.print_json(json.dumps(outcome["result"], default=str))
    return 0 if outcome["status"] == "completed" else 1


def waiting_line(run_id: str, gate: dict[str, Any]) -> str:
    deadline = f"; deadline {gate['deadline']}" if gate.get("deadline") else ""
    who = ", ".join(gate["approvers"])
    return (
        f"run {run_id} is waiting for approval at gate '{gate['gate']}' (tier {gate['tier']}, {gate['approvals']} of "
        f"{gate['quorum']} approvals from {who}{deadline}); decide with `python starter.py approve {run_id} "
        f"--gate {gate['gate']} --by {gate['approvers'][0]}` (or reject / request-changes)"
    )


def print_outcome(outcome: dict[str, Any], as_json: bool) -> int:
    """Print a settled run: ended (the result) or parked at a gate (how to decide). Exit code."""
    if outcome["status"] != "waiting_for_approval":
        return print_result(outcome, as_json)
    if as_json:
        emit_json(outcome)
    else:
        for gate in outcome["pending_approvals"]:
            print(waiting_line(outcome["run_id"], gate))
    return 0
