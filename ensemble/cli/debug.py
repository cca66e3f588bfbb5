"""Debugging runs from their history: `history` (export), `replay` (against this code) and
`timeline` (a picture of a run). See docs/replay.md and docs/observability.md."""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf.json_format import ParseError
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import WorkflowHistory
from temporalio.service import RPCError, RPCStatusCode
from temporalio.workflow import NondeterminismError

from ensemble.runtime import codec, flow_versions
from ensemble.runtime import connection as temporal
from ensemble.runtime.converter import data_converter, decode_message, decode_payload
from ensemble.runtime.payloads import external_storage, inline_stored
from ensemble.spec import versions
from ensemble.spec.errors import EnsembleError, InputError

if TYPE_CHECKING:
    from temporalio.worker import Replayer

# ---------------------------------------------------------------- history


async def cmd_history(args: argparse.Namespace) -> int:
    from ensemble.runs.history import get_run

    client = await temporal.connect()
    await get_run(client, args.run_id)  # a clear error for an unknown run
    try:
        history = await client.get_workflow_handle(args.run_id, run_id=args.run).fetch_history()
    except RPCError as err:
        if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
            raise EnsembleError(f"run '{args.run_id}' has no execution '{args.run}'") from None
        raise
    if not args.keep_references:  # values the run keeps in a payload store go into the record itself
        await inline_stored(history.events, external_storage(), f"run {args.run_id}")
        await flow_versions.inline(client, history.events)  # and so does the flow version it names
    if args.decode:  # plain payloads and failure messages, for a holder of the encryption keys
        for event in history.events:
            decode_message(event)
    text = history.to_json()
    if args.out:
        try:
            Path(args.out).write_text(text + "\n")
        except OSError as err:
            raise InputError(f"cannot write {args.out}: {err.strerror or err}") from None
        print(f"wrote {len(history.events)} events of run {args.run_id} to {args.out}")
    else:
        print(text)
    started = history.events[0].workflow_execution_started_event_attributes if history.events else None
    if started is not None and started.continued_execution_run_id:
        print(
            f"note: this run continued from an earlier execution: `history {args.run_id} --run {started.continued_execution_run_id}`",
            file=sys.stderr,
        )
    children = [
        e.start_child_workflow_execution_initiated_event_attributes.workflow_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
    ]
    if children:
        print(
            f"note: {len(children)} child workflow(s) have histories of their own, e.g. `history {children[0]}`",
            file=sys.stderr,
        )
    return 0


# ---------------------------------------------------------------- replay


@dataclass
class ReplayReport:
    file: str
    run_id: str
    events: int
    ok: bool
    kind: str | None = None  # "nondeterminism", "workflow task failed" or "unreadable" (not replayed)
    event_id: int | None = None
    event_type: str | None = None
    event: str | None = None  # what the diverging event recorded
    message: str | None = None


def load_workflows(spec: str) -> list[type]:
    """`module:Class[,module:Class]` as workflow classes."""
    classes = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        module, _, name = item.partition(":")
        if not module or not name:
            raise InputError(f"--workflows {item!r}: expected MODULE:CLASS")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            raise InputError(f"--workflows {item}: cannot load it ({err})") from None
        if not hasattr(cls, "__temporal_workflow_definition"):
            raise InputError(f"--workflows {item}: not a workflow class (@workflow.defn)")
        classes.append(cls)
    if not classes:
        raise InputError("--workflows names no MODULE:CLASS")
    return classes


def read_history(path: Path, workflow_id: str | None) -> WorkflowHistory:
    """A history file as `history` or `temporal workflow show -o json` writes it."""
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not JSON ({getattr(err, 'msg', err)})") from None
    try:
        history = WorkflowHistory.from_json(workflow_id or "", data)
    except (ParseError, TypeError, ValueError, AttributeError) as err:
        raise InputError(f"{path}: not an event history ({str(err).splitlines()[0][:120]})") from None
    if not history.events or history.events[0].event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
        raise InputError(f"{path}: not an event history (it must start with WorkflowExecutionStarted)")
    return WorkflowHistory(workflow_id or recorded_run_id(history.events) or path.stem, history.events)


def recorded_run_id(events: Sequence[HistoryEvent]) -> str | None:
    """The run id a history was recorded under: the one its agent calls carry in their context
    where it is not the run's own (a chat's turns name their flow run), else the workflow id its
    start event names."""
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            payloads = e.activity_task_scheduled_event_attributes.input.payloads
            try:
                value = (
                    data_converter().payload_converter.from_payload(decode_payload(payloads[0])) if payloads else None
                )
            except Exception:  # not a payload Ensemble wrote
                continue
            run_id = value.get("context", {}).get("run_id") if isinstance(value, dict) else None
            if isinstance(run_id, str) and run_id:
                return run_id
    started = events[0].workflow_execution_started_event_attributes if events else None
    return (started.workflow_id if started is not None else "") or None


def _event_type(e: HistoryEvent) -> str:
    name = EventType.Name(e.event_type).removeprefix("EVENT_TYPE_")
    return "".join(part.capitalize() for part in name.split("_"))


def describe_event(e: HistoryEvent) -> str:
    if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
        a = e.activity_task_scheduled_event_attributes
        return f"agent '{a.activity_type.name}' for step '{a.activity_id}'"
    if e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
        child = e.start_child_workflow_execution_initiated_event_attributes
        return f"child workflow {child.workflow_type.name} '{child.workflow_id}'"
    if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED:
        return f"timer '{e.timer_started_event_attributes.timer_id}'"
    if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
        return f"marker '{e.marker_recorded_event_attributes.marker_name}'"
    return _event_type(e)


def failure_message(err: BaseException) -> str:
    """The core's own words, without the wrapping it arrives in."""
    text = str(err)
    m = re.search(r'message: "(.*?)", source:', text, re.S)
    if m:
        text = m.group(1).encode().decode("unicode_escape", errors="replace")
    return re.sub(r"^\[TMPRL\d+\]\s*", "", text).strip()


_COMMAND_EVENTS = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
    EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED,
    EventType.EVENT_TYPE_TIMER_STARTED,
    EventType.EVENT_TYPE_MARKER_RECORDED,
    EventType.EVENT_TYPE_TIMER_CANCELED,
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
    EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
    EventType.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED,
    EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED,
    EventType.EVENT_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED,
}


async def locate(replayer: Replayer, history: WorkflowHistory, message: str) -> HistoryEvent | None:
    """The event where replay diverged: named by the failure when it says, else found by
    replaying ever longer prefixes of the history (cut after each workflow task's commands)
    and picking, among the commands of the first workflow task that fails, the one the
    failure names (or the first)."""
    events = list(history.events)
    named = re.search(r"HistoryEvent\(id: (\d+)", message)
    if named:
        return next((e for e in events if e.event_id == int(named.group(1))), None)
    ends = []  # a prefix ends just before each WorkflowTaskScheduled that follows a completed task
    seen_completed = False
    for i, e in enumerate(events):
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            seen_completed = True
        elif e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED and seen_completed:
            ends.append(i)
    ends.append(len(events))

    async def fails(end: int) -> bool:
        result = await replayer.replay_workflow(
            WorkflowHistory(history.workflow_id, events[:end]), raise_on_replay_failure=False
        )
        return result.replay_failure is not None

    lo, hi = 0, len(ends) - 1  # the last prefix (the whole history) fails
    while lo < hi:
        mid = (lo + hi) // 2
        if await fails(ends[mid]):
            hi = mid
        else:
            lo = mid + 1
    start = ends[lo - 1] if lo > 0 else 0
    task_done = max(
        (i for i in range(start, ends[lo]) if events[i].event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED),
        default=start,
    )
    commands = [e for e in events[task_done : ends[lo]] if e.event_type in _COMMAND_EVENTS]
    quoted = set(re.findall(r"'([^']+)'", message))
    for e in commands:
        if quoted & _names(e):
            return e
    return commands[0] if commands else None


def _names(e: HistoryEvent) -> set[str]:
    if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
        a = e.activity_task_scheduled_event_attributes
        return {a.activity_type.name, a.activity_id}
    if e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
        child = e.start_child_workflow_execution_initiated_event_attributes
        return {child.workflow_id, child.workflow_type.name}
    if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED:
        return {e.timer_started_event_attributes.timer_id}
    return set()


async def unreadable(history: Any, client: Any = None) -> str | None:
    """Why this process cannot read a run's input (so cannot replay it), or None. A replay of such
    a run fails at its first workflow task with only "Failed decoding arguments". A run that names
    its flow's version is readable where this process knows the version: deployed here, or read
    from the version's record through `client`."""
    events = history.events
    payloads = list(events[0].workflow_execution_started_event_attributes.input.payloads) if events else []
    converter = data_converter()
    sealed = [p for p in payloads if p.metadata.get("encoding") == codec.ENCODING]
    if sealed and converter.payload_codec is None:
        kid = sealed[0].metadata.get(codec.KEY_ID, b"").decode(errors="replace")
        return (
            f"its payloads are encrypted with key '{kid}' and this process has no key: "
            f"set {codec.KEYS_ENV} or {codec.KEY_FILE_ENV} as the workers have them"
        )
    try:
        values = await converter.decode(payloads)  # by reference from the payload store, decrypted, converted
    except Exception as err:  # a codec's own error names the key; anything else, as it says
        return f"its input cannot be decoded here: {str(err).splitlines()[0][:200] if str(err) else type(err).__name__}"
    data = values[0] if values else None
    if isinstance(data, dict) and versions.REF in data:
        if versions.REF in await flow_versions.resolve(client, data):
            return (
                f"it names flow version {data[versions.REF]}, which this process does not know: deploy that flow "
                "here (ENSEMBLE_FLOWS, ENSEMBLE_FLOW_PATH), or export the run with `history --out`, which writes "
                "the version into the file"
            )
    return None


async def replay_files(paths: list[Path], workflows: list[type], workflow_id: str | None = None) -> list[ReplayReport]:
    from ensemble.runtime.telemetry import quiet_runtime

    histories = [(p, read_history(p, workflow_id)) for p in paths]  # every file checked before any replay
    for path, history in histories:  # values a file holds by reference, from the store (or one clear line)
        await inline_stored(history.events, external_storage(), str(path))
    try:
        from temporalio.worker import Replayer  # the SDK's worker package: for replays only

        replayer = Replayer(workflows=workflows, data_converter=data_converter(), runtime=quiet_runtime())
    except (TypeError, ValueError) as err:
        raise InputError(f"cannot replay against these workflows: {err}") from None
    reports = []
    for path, history in histories:
        report = ReplayReport(file=str(path), run_id=history.workflow_id, events=len(history.events), ok=True)
        reports.append(report)
        if (why := await unreadable(history)) is not None:
            report.ok, report.kind, report.message = False, "unreadable", why
            continue
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        report.ok = result.replay_failure is None
        if result.replay_failure is not None:
            report.message = failure_message(result.replay_failure)
            report.kind = (
                "nondeterminism" if isinstance(result.replay_failure, NondeterminismError) else "workflow task failed"
            )
            event = await locate(replayer, history, report.message)
            if event is not None:
                report.event_id, report.event_type, report.event = (
                    event.event_id,
                    _event_type(event),
                    describe_event(event),
                )
    return reports


async def cmd_replay(args: argparse.Namespace) -> int:
    from ensemble.runtime.worker import WORKFLOWS

    if args.id and len(args.files) > 1:
        raise InputError("--id names the run of one history: give a single FILE with it")
    workflows = load_workflows(args.workflows) if args.workflows else list(WORKFLOWS)
    reports = await replay_files([Path(f) for f in args.files], workflows, args.id)
    if args.json:
        print(json.dumps([asdict(r) for r in reports], indent=2))
    else:
        for r in reports:
            if r.ok:
                print(f"OK        {r.file} · run {r.run_id} · {r.events} events replayed")
            elif r.kind == "unreadable":
                print(f"UNREAD    {r.file} · run {r.run_id} · not replayed, {r.message}")
            else:
                where = f" at event {r.event_id} {r.event_type} ({r.event})" if r.event_id else ""
                print(f"DIVERGED  {r.file} · run {r.run_id} · {r.kind}{where}:")
                print(f"          {r.message}")
        bad = sum(not r.ok for r in reports)
        unread = sum(r.kind == "unreadable" for r in reports)
        print(
            f"{len(reports)} histor{'y' if len(reports) == 1 else 'ies'}: {len(reports) - bad} replayed, "
            f"{bad - unread} diverged" + (f", {unread} not readable here" if unread else "")
        )
    return 0 if all(r.ok for r in reports) else 1


# ---------------------------------------------------------------- timeline


async def cmd_timeline(args: argparse.Namespace) -> int:
    from ensemble.runs import timeline
    from ensemble.runs.view import describe_run

    out = Path(args.out)
    if out.suffix.lower() not in (".svg", ".html", ".htm"):
        raise InputError(f"--out {out}: the timeline is written as .svg or .html")
    client = await temporal.connect()
    view = await describe_run(client, args.run_id)
    timeline.write(view, out)
    print(f"wrote the timeline of run {view.run_id} ({len(view.steps)} steps, {view.status}) to {out}")
    return 0


def register(sub: Any) -> None:
    s = sub.add_parser(
        "history", help="export a run's event history as JSON (the format of the temporal CLI and Web UI)"
    )
    s.add_argument("run_id")
    s.add_argument("--out", metavar="FILE", help="write it to FILE (default: stdout)")
    s.add_argument(
        "--run",
        metavar="EXECUTION",
        default=None,
        help="one execution of a run that continued as new (default: the latest)",
    )
    s.add_argument(
        "--decode",
        action="store_true",
        help="decrypt payloads and failure messages (encryption at rest; default: as stored)",
    )
    s.add_argument(
        "--keep-references",
        action="store_true",
        help="leave values kept in the payload store as the references the server holds "
        "(default: the values themselves, so the file is a record on its own)",
    )
    s.set_defaults(fn=cmd_history)

    s = sub.add_parser("replay", help="replay histories against this code; exit 1 when one diverges (nondeterminism)")
    s.add_argument("files", nargs="+", metavar="FILE")
    s.add_argument(
        "--id", default=None, help="the run id the history was recorded under (default: read from the history)"
    )
    s.add_argument(
        "--workflows",
        metavar="MODULE:CLASS[,...]",
        help="replay against these workflow classes instead of this worker's (e.g. a candidate change)",
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_replay)

    s = sub.add_parser("timeline", help="draw a run as a Gantt-style timeline (.svg or .html)")
    s.add_argument("run_id")
    s.add_argument("--out", required=True, metavar="FILE", help="FILE.svg or FILE.html")
    s.set_defaults(fn=cmd_timeline)
