"""A run's timeline as a Gantt-style picture: `python starter.py timeline RUN_ID --out FILE.svg|.html`.

One row per step, named by step and agent, drawn from the run's status view (its event history,
child workflows included). A bar runs from when the step was scheduled to when it ended (or to
now, open-ended, while it runs). A step that needed several attempts shows the time spent on
earlier attempts and their backoff as a hatched segment before its last attempt, and its attempt
count; human gates are drawn in amber with a dashed outline, compensations in grey. Plain SVG, no
scripts; the HTML page embeds the same SVG above a table of the steps.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from ensemble.spec import RunStatusView, StepRecord
from ensemble.spec.errors import InputError

WIDTH, LABEL_W, ROW_H, BAR_H, TOP, RIGHT_PAD = 1200, 300, 26, 16, 64, 170
FILL = {
    "completed": "#3c9d5d",
    "failed": "#d64545",
    "timed_out": "#d64545",
    "canceled": "#b0a040",
    "running": "#3b7dd8",
    "retrying": "#a347c9",
    "scheduled": "#9aa5b1",
    "waiting": "#e8a317",
}
STYLE = """
  .title { font: bold 15px sans-serif; fill: #222; }
  .meta { font: 12px sans-serif; fill: #555; }
  .label { font: 12px monospace; fill: #222; }
  .tick { font: 10px sans-serif; fill: #777; }
  .grid { stroke: #e3e3e3; stroke-width: 1; }
  .attempts { font: bold 11px sans-serif; fill: #a347c9; }
  .note { font: 10px sans-serif; fill: #555; }
  rect.gate { stroke: #a86f00; stroke-width: 1.5; stroke-dasharray: 4 2; }
  .open { opacity: 0.75; }
"""


def _ts(iso: str | None) -> datetime | None:
    if not iso:
        return None
    dt = datetime.fromisoformat(iso)
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _fmt_s(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def _ticks(span_s: float) -> list[float]:
    for step in (
        0.001,
        0.002,
        0.005,
        0.01,
        0.02,
        0.05,
        0.1,
        0.2,
        0.5,
        1,
        2,
        5,
        10,
        15,
        30,
        60,
        120,
        300,
        600,
        1800,
        3600,
        7200,
        21600,
        86400,
    ):
        if span_s / step <= 10:
            return [i * step for i in range(int(span_s / step) + 1)]
    return [0.0, span_s]


def _bounds(view: RunStatusView, now: datetime) -> tuple[datetime, datetime]:
    times = [t for s in view.steps for t in (_ts(s.started_at), _ts(s.ended_at)) if t]
    start = _ts(view.started_at) or (min(times) if times else now)
    end = _ts(view.ended_at) or (
        now if view.status not in ("completed", "failed", "canceled", "terminated", "timed_out") else None
    )
    end = max([end or start, *times])
    return start, end


def _tooltip(s: StepRecord) -> str:
    lines = [f"{s.name} · {s.agent} ({s.kind})", f"status: {s.status}", f"attempts: {s.attempts}"]
    if s.started_at:
        lines.append(f"scheduled: {s.started_at}")
    if s.attempt_started_at and s.attempts > 1:
        lines.append(f"last attempt started: {s.attempt_started_at}")
    if s.ended_at:
        lines.append(f"ended: {s.ended_at}")
    if s.latency_ms is not None:
        lines.append(f"latency: {s.latency_ms:.0f} ms")
    if s.error:
        lines.append(f"error: {s.error}")
    elif s.summary:
        lines.append(f"output: {s.summary}")
    return "\n".join(lines)


def render_svg(view: RunStatusView, *, now: datetime | None = None) -> str:
    """The timeline of a run as a standalone SVG document."""
    now = now or datetime.now(timezone.utc)
    start, end = _bounds(view, now)
    span_s = max((end - start).total_seconds(), 0.001)
    plot_w = WIDTH - LABEL_W - RIGHT_PAD
    height = TOP + ROW_H * max(len(view.steps), 1) + 40

    def x(t: datetime) -> float:
        return round(LABEL_W + (t - start).total_seconds() / span_s * plot_w, 2)

    meta = f"flow {view.flow or '?'} · {view.status} · {_fmt_s(span_s)} · {len(view.steps)} steps"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" '
        f"data-run={quoteattr(view.run_id)} data-status={quoteattr(view.status)}>",
        f"<style>{STYLE}</style>",
        '<defs><pattern id="retry-hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
        '<rect width="6" height="6" fill="#ead7f2"/><line x1="0" y1="0" x2="0" y2="6" stroke="#a347c9" stroke-width="2.5"/>'
        "</pattern></defs>",
        f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        f'<text class="title" x="12" y="22">{escape(f"run {view.run_id}")}</text>',
        f'<text class="meta" x="12" y="40">{escape(meta)}</text>',
    ]
    axis_y = TOP - 6
    for t in _ticks(span_s):
        tx = round(LABEL_W + t / span_s * plot_w, 2)
        out.append(f'<line class="grid" x1="{tx}" y1="{axis_y}" x2="{tx}" y2="{height - 30}"/>')
        out.append(
            f'<text class="tick" x="{tx}" y="{axis_y - 4}" text-anchor="middle">{escape(_fmt_s(t) if t else "0")}</text>'
        )
    for row, s in enumerate(view.steps):
        y = TOP + row * ROW_H
        label = f"{s.name} · {s.agent}" if s.name != s.agent else s.agent
        if len(label) > 40:
            label = label[:39] + "…"
        out.append(
            f'<g class="step {s.kind}" data-step={quoteattr(s.name)} data-agent={quoteattr(s.agent)} data-kind={quoteattr(s.kind)} '
            f'data-status={quoteattr(s.status)} data-attempts="{s.attempts}">'
        )
        out.append(f"<title>{escape(_tooltip(s))}</title>")
        out.append(
            f'<text class="label" x="{LABEL_W - 8}" y="{y + BAR_H - 3}" text-anchor="end">{escape(label)}</text>'
        )
        begin, finish = _ts(s.started_at), _ts(s.ended_at)
        if begin is None:
            out.append("</g>")
            continue
        open_ended = finish is None
        finish = finish or max(end, begin)
        x0, x1 = x(begin), max(x(finish), x(begin) + 2)
        retried_until = _ts(s.attempt_started_at) if s.attempts > 1 else None
        fill = FILL["waiting" if s.kind == "gate" else s.status] if s.kind != "compensation" else "#8a8f96"
        classes = "bar" + (" gate" if s.kind == "gate" else "") + (" open" if open_ended else "")
        if retried_until and begin < retried_until <= finish:
            xr = x(retried_until)
            out.append(
                f'<rect class="retries" x="{x0}" y="{y}" width="{max(xr - x0, 1):.2f}" height="{BAR_H}" fill="url(#retry-hatch)"/>'
            )
            out.append(
                f'<rect class="{classes}" x="{xr}" y="{y}" width="{max(x1 - xr, 2):.2f}" height="{BAR_H}" rx="2" fill="{fill}"/>'
            )
        else:
            out.append(
                f'<rect class="{classes}" x="{x0}" y="{y}" width="{x1 - x0:.2f}" height="{BAR_H}" rx="2" fill="{fill}"/>'
            )
        note_x = x1 + 4
        if s.attempts > 1 and s.kind != "gate":  # a gate's count is its escalation tier
            out.append(f'<text class="attempts" x="{note_x}" y="{y + BAR_H - 3}">×{s.attempts}</text>')
            note_x += 24
        if s.kind == "gate":
            waited = "waiting for approval" if s.status == "waiting" else f"human decision · {s.status}"
            waited += f" (tier {s.attempts})" if s.attempts > 1 else ""
            out.append(f'<text class="note" x="{note_x}" y="{y + BAR_H - 3}">{escape(waited)}</text>')
        elif s.status in ("failed", "timed_out"):
            out.append(f'<text class="note" x="{note_x}" y="{y + BAR_H - 3}">{escape(s.status)}</text>')
        out.append("</g>")
    legend_y = height - 12
    legend = [
        ("completed", FILL["completed"]),
        ("running", FILL["running"]),
        ("failed", FILL["failed"]),
        ("human gate", FILL["waiting"]),
        ("compensation", "#8a8f96"),
        ("earlier attempts + backoff", "url(#retry-hatch)"),
    ]
    lx = 12
    for name, color in legend:
        out.append(f'<rect x="{lx}" y="{legend_y - 9}" width="12" height="10" fill="{color}"/>')
        out.append(f'<text class="tick" x="{lx + 16}" y="{legend_y}">{escape(name)}</text>')
        lx += 30 + 6 * len(name)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def render_html(view: RunStatusView, *, now: datetime | None = None) -> str:
    """A page with the SVG timeline and a table of the steps."""
    rows = "\n".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(v))}</td>"
            for v in (
                s.name,
                s.agent,
                s.kind,
                s.status,
                s.attempts,
                s.started_at or "",
                s.ended_at or "",
                f"{s.latency_ms:.0f}" if s.latency_ms is not None else "",
                s.error or s.summary or "",
            )
        )
        + "</tr>"
        for s in view.steps
    )
    head = "".join(
        f"<th>{h}</th>"
        for h in ("step", "agent", "kind", "status", "attempts", "scheduled", "ended", "ms", "output / error")
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(f"run {view.run_id} · timeline")}</title>
<style>body {{ font-family: sans-serif; margin: 24px; }} table {{ border-collapse: collapse; font-size: 13px; }}
td, th {{ border: 1px solid #ddd; padding: 3px 8px; text-align: left; }} th {{ background: #f4f4f4; }}</style></head>
<body>
<h1>{html.escape(f"run {view.run_id}")}</h1>
<p>flow {html.escape(view.flow or "?")} · {html.escape(view.status)}{html.escape(f" · error: {view.error}") if view.error else ""}</p>
{render_svg(view, now=now)}
<table><thead><tr>{head}</tr></thead><tbody>
{rows}
</tbody></table>
</body></html>
"""


def write(view: RunStatusView, out: Path) -> str:
    """Write the timeline in the format the file's extension names (.svg or .html)."""
    suffix = out.suffix.lower()
    if suffix == ".svg":
        text = render_svg(view)
    elif suffix in (".html", ".htm"):
        text = render_html(view)
    else:
        raise InputError(f"--out {out}: the timeline is written as .svg or .html")
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as err:
        raise InputError(f"cannot write {out}: {err.strerror or err}") from None
    return text
