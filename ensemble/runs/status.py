"""`status` for people: a run's steps as a table (start, end, latency, attempts, a summary of each
output), its open approvals and token usage, and `status --watch`, which follows a run live
until it ends."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text
from temporalio.client import Client

from ensemble.runs.view import describe_run
from ensemble.spec import AskedAgain, RunStatusView, StepRecord

ENDED = ("completed", "failed", "canceled", "terminated", "timed_out")
STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "timed_out": "red",
    "canceled": "yellow",
    "terminated": "red",
    "running": "cyan",
    "retrying": "magenta",
    "scheduled": "dim",
    "waiting": "yellow bold",
    "waiting_for_approval": "yellow bold",
}


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(32), 127, *range(0x80, 0xA0)] if c not in (9,)}
_CONTROL[9] = " "


def safe(text: object) -> str:
    """Text shown on a terminal with control characters and escape sequences written out
    (`\\x1b[31m`), so an agent's output can neither restyle, move nor rewrite the terminal."""
    return str(text).translate(_CONTROL)


def _clock(iso: str | None) -> str:
    return iso[11:23] if iso else ""


def _elapsed(view: RunStatusView) -> str:
    if not view.started_at:
        return ""
    start = datetime.fromisoformat(view.started_at)
    end = datetime.fromisoformat(view.ended_at) if view.ended_at else datetime.now(timezone.utc)
    return f"{(end - start).total_seconds():.1f}s"


def progress_line(view: RunStatusView) -> str:
    """`4 steps: 2 completed, 1 running, 1 waiting for approval · 3.2s`."""
    counts: dict[str, int] = {}
    for s in view.steps:
        counts[s.status] = counts.get(s.status, 0) + 1
    order = ["completed", "running", "retrying", "scheduled", "waiting", "failed", "timed_out", "canceled"]
    parts = [f"{counts[k]} {'waiting for approval' if k == 'waiting' else k}" for k in order if counts.get(k)]
    total = len(view.steps)
    line = f"{total} step{'s' if total != 1 else ''}" + (": " + ", ".join(parts) if parts else "")
    elapsed = _elapsed(view)
    return f"{line} · {view.status} · {elapsed}" if elapsed else f"{line} · {view.status}"


def _step_cells(s: StepRecord) -> tuple[Text, Text]:
    name, agent = Text(safe(s.name)), Text(safe(s.agent))
    if s.kind == "gate":
        name.stylize("yellow")
        agent = Text(f"⏸ {safe(s.agent)} (gate)", style="yellow")
    elif s.kind == "compensation":
        name = Text(f"↩ {safe(s.name)}", style="italic")
        agent = Text(f"{safe(s.agent)} (undo)", style="italic")
    return name, agent


def steps_table(view: RunStatusView, width: int = 140) -> Table:
    rows = []
    for s in view.steps:
        name, agent = _step_cells(s)
        status = "waiting for approval" if s.status == "waiting" else s.status
        detail = Text(safe(s.error), style="red") if s.error else Text(safe(s.summary or ""))
        if s.usage and s.usage.total_tokens:
            detail.append(f"  [{s.usage.total_tokens} tok]", style="dim")
        rows.append(
            [
                name,
                agent,
                Text(status, style=STATUS_STYLE.get(s.status, "")),
                Text(str(s.attempts or "")),
                Text(_clock(s.started_at)),
                Text(_clock(s.ended_at)),
                Text(f"{s.latency_ms:.0f}" if s.latency_ms is not None else ""),
                detail,
            ]
        )
    table = Table(expand=False)
    used = 3 * 8 + 1  # cell padding and borders
    for i, col in enumerate(("step", "agent", "status", "tries", "start", "end", "ms")):
        # these keep their width (names up to 40 characters); the output column gets the rest
        w = min(max([len(col), *(r[i].cell_len for r in rows)]), 40)
        used += w
        table.add_column(
            col, no_wrap=True, width=w, overflow="ellipsis", justify="right" if col in ("tries", "ms") else "left"
        )
    rest = max(width - used, 16)
    table.add_column("output / error", overflow="ellipsis", no_wrap=True, max_width=rest)
    for r in rows:
        r[-1].truncate(rest, overflow="ellipsis")
        table.add_row(*r)
    return table


def approvals_table(pending: list[dict[str, Any]]) -> Table:
    table = Table(title="waiting for approval", title_justify="left", title_style="yellow bold")
    for col in ("gate", "tier", "approvers", "approvals", "deadline"):
        table.add_column(col, no_wrap=col not in ("approvers", "approvals"))
    for p in pending:
        approvers = p.get("approvers") or []
        given = f"{p.get('approvals', 0)} of {p.get('quorum', 1)}"
        if p.get("approved_by"):
            given += f" ({', '.join(map(str, p['approved_by']))})"
        table.add_row(
            safe(p.get("gate") or p.get("path") or "?"),
            safe(p.get("tier", "")),
            safe(", ".join(map(str, approvers)) if isinstance(approvers, list) else approvers),
            safe(given),
            safe(p.get("deadline") or "none"),
        )
    return table


def render(view: RunStatusView, *, progress: bool = False, width: int = 140) -> RenderableType:
    head = Text.assemble(
        "run ",
        (safe(view.run_id), "bold"),
        f" · flow {safe(view.flow or '?')} · ",
        (view.status, STATUS_STYLE.get(view.status, "bold")),
    )
    if view.started_at:
        head.append(f" · started {view.started_at[:19].replace('T', ' ')} UTC")
    parts: list[RenderableType] = [head]
    if view.asks_again:
        parts.append(Text(safe(AskedAgain.model_validate(view.asks_again).line())))
    parts.append(steps_table(view, width))
    if view.pending_approvals:
        parts.append(approvals_table(view.pending_approvals))
    usage = getattr(view, "usage", None)
    if usage and usage.total_tokens:
        parts.append(
            Text(f"tokens: {usage.prompt_tokens} prompt + {usage.completion_tokens} completion = {usage.total_tokens}")
        )
    if view.error:
        parts.append(Text(f"error: {safe(view.error)}", style="red"))
    if progress:
        parts.append(Text(progress_line(view), style="dim" if view.status in ENDED else "bold"))
    return Group(*parts)


def _fingerprint(view: RunStatusView) -> str:
    return json.dumps(view.model_dump(mode="json"), sort_keys=True, default=str)


async def watch(
    client: Client, run_id: str, console: Console, *, as_json: bool = False, interval: float = 1.0
) -> RunStatusView:
    """Follow a run until it ends. On a terminal the table redraws in place with a progress line;
    otherwise one table (or, with `as_json`, one JSON line) is printed each time something changed."""
    view = await describe_run(client, run_id)
    if console.is_terminal and not as_json:
        from rich.live import Live

        with Live(
            render(view, progress=True, width=console.width), console=console, refresh_per_second=4, transient=False
        ) as live:
            while view.status not in ENDED:
                await asyncio.sleep(interval)
                view = await describe_run(client, run_id)
                live.update(render(view, progress=True, width=console.width))
        return view
    last = None
    while True:
        mark = _fingerprint(view)
        if mark != last:
            last = mark
            if as_json:
                print(json.dumps(view.model_dump(mode="json"), default=str), flush=True)
            else:
                console.print(render(view, progress=True, width=console.width))
                console.print()
        if view.status in ENDED:
            return view
        await asyncio.sleep(interval)
        view = await describe_run(client, run_id)
