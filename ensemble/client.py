"""The Python client API: start a run, follow it, wait for its result or its next gate, decide,
cancel, and list what waits on people. The CLI is a thin layer over it, and its errors are the
ones the CLI prints as one line: `EnsembleError` (refused, failed, unreachable: exit 1) and
`InputError` (bad input: exit 2).

    async with await EnsembleClient.connect() as ensemble:
        run = await ensemble.start("hello", {"name": "Ada"})
        outcome = await ensemble.wait(run.run_id)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from ensemble.authoring.flows import LoadedFlow, all_flows, find_flow
from ensemble.authoring.reading import MAX_DEPTH, depth_of, one_line
from ensemble.runs import dlq, inbox, live, timeline
from ensemble.runs.audit import audit_run
from ensemble.runs.history import get_run, read_history
from ensemble.runs.view import describe_run
from ensemble.runtime import connection
from ensemble.runtime.launch import start_request
from ensemble.runtime.payloads import INLINE_LIMIT, external_storage, inline_stored, max_input_bytes
from ensemble.runtime.settings import default_task_queue
from ensemble.spec import GateDecision, GateDecisionResult, RunRequest, RunStatusView, protocol
from ensemble.spec.errors import EnsembleError, InputError

__all__ = ["SAME_INPUT", "EnsembleClient", "FlowInfo", "RunConflict", "RunOutcome", "StartedRun", "check_input"]

# `ask_again(..., run_input=SAME_INPUT)`: the rejected run's own input (the default).
SAME_INPUT: Any = object()


class RunConflict(EnsembleError):
    """A run id already names a run of another flow or with another input."""


def check_input(value: Any, flow: LoadedFlow) -> None:
    """Refuse, before a run starts, an input that no worker could carry through the run: too deep,
    not JSON, over the size limit, or not what the flow's input schema says."""
    if depth_of(value) > MAX_DEPTH:
        raise InputError(f"input is nested more than {MAX_DEPTH} levels deep; flatten it")
    try:
        size = len(json.dumps(value).encode())
    except (TypeError, ValueError, RecursionError) as err:
        raise InputError(f"input cannot be sent as JSON: {one_line(str(err), 200)}") from None
    limit = max_input_bytes()
    if size > limit:
        hint = (
            ""
            if limit >= INLINE_LIMIT
            else (
                "; configure a payload store (ENSEMBLE_PAYLOAD_STORE, docs/operations.md) to pass large documents by reference"
            )
        )
        raise InputError(
            f"input is {size / 2**20:.1f} MiB; a run's input must stay under {limit / 2**20:.1f} MiB{hint}"
        )
    if isinstance(flow.spec.input_schema, dict):
        import jsonschema  # loaded by the commands that start runs

        try:
            jsonschema.validate(value, flow.spec.input_schema)
        except jsonschema.ValidationError as err:
            where = "/".join(str(p) for p in err.absolute_path) or "(root)"
            raise InputError(f"input does not match flow '{flow.spec.name}': at {where}: {err.message}") from None
        except jsonschema.SchemaError as err:
            raise InputError(f"flow '{flow.spec.name}' has an invalid input_schema: {err.message}") from None


class FlowInfo(BaseModel):
    """A flow this client can start."""

    name: str
    description: str = ""
    patterns: list[str] = Field(default_factory=list)
    agents: list[str] = Field(default_factory=list)
    example_input: str | None = None


class StartedRun(BaseModel):
    run_id: str
    flow: str
    task_queue: str


class RunOutcome(BaseModel):
    """Where a run stands once it ended, or parked waiting on people (`waiting_for_approval`,
    with the gates it waits at in `pending_approvals`)."""

    run_id: str
    status: str
    result: Any = None
    error: str | None = None
    pending_approvals: list[dict[str, Any]] = Field(default_factory=list)


class EnsembleClient:
    """Ensemble's runs on one Temporal namespace. Build it with `connect()` (the embedded server or
    TEMPORAL_ADDRESS), or around a `temporalio.client.Client` you already have."""

    def __init__(self, client: Client) -> None:
        self.temporal = client

    @classmethod
    async def connect(cls, *, start_server: bool = True) -> EnsembleClient:
        """Connect as the environment says (TEMPORAL_ADDRESS and friends, or the embedded server,
        started when `start_server`) and make sure Ensemble's search attributes exist."""
        client = await connection.connect(start_server=start_server)
        await connection.ensure_search_attributes(client)
        return cls(client)

    async def __aenter__(self) -> EnsembleClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    # ------------------------------------------------------------ flows and runs

    @staticmethod
    def flows() -> list[FlowInfo]:
        """The bundled flows and those registered in this process."""
        return [
            FlowInfo(
                name=f.spec.name,
                description=f.spec.description,
                patterns=f.patterns,
                agents=f.agent_order,
                example_input=str(f.example_input) if f.example_input else None,
            )
            for f in all_flows()
        ]

    @staticmethod
    def request(flow: str | Path | LoadedFlow, run_input: Any) -> RunRequest:
        """The run request for `flow` (a name, a flow file, or a loaded flow) and its input,
        checked against the flow's input schema and the payload limits."""
        loaded = flow if isinstance(flow, LoadedFlow) else find_flow(str(flow))
        check_input(run_input, loaded)
        queue = loaded.spec.task_queue or default_task_queue()
        return RunRequest(flow=loaded.spec, agents=loaded.agents, input=run_input, task_queue=queue)

    async def start(self, flow: str | Path | LoadedFlow, run_input: Any, *, run_id: str | None = None) -> StartedRun:
        """Start a run. `run_id` makes starting idempotent for the caller: a second start under
        the same id is refused (EnsembleError) and never starts a second run."""
        return await self.launch(self.request(flow, run_input), run_id=run_id)

    async def launch(self, request: RunRequest, *, run_id: str | None = None) -> StartedRun:
        """Start a run of a request built by `request()` or `again_request()`."""
        name = request.flow.name
        run_id = run_id or f"{name}-{uuid.uuid4().hex[:8]}"
        again = request.asks_again
        await start_request(
            self.temporal,
            request,
            run_id,
            summary=f"{name}: {again.line() if again else request.flow.description}",
            origin=(protocol.ASKS_AGAIN, again.run_id) if again else None,  # `dlq list` shows it
            memo={"asks_again": again.run_id} if again else None,
        )
        return StartedRun(run_id=run_id, flow=name, task_queue=request.task_queue)

    async def again_request(
        self, rejected_run_id: str, *, flow: str | Path | LoadedFlow | None = None, run_input: Any = SAME_INPUT
    ) -> RunRequest:
        """The request of a new run asking again after people rejected `rejected_run_id`: the same
        flow (as this process has it now; `flow` must name it if given) with the rejected run's
        input unless `run_input` is given, recording which run and rejection it follows
        (`RunRequest.asks_again`). InputError for an unknown run, a run people did not reject, or
        another flow. The rejected run is only read."""
        asked, old = await dlq.rejected_run(self.temporal, rejected_run_id)
        loaded = (
            find_flow(old.flow.name) if flow is None else flow if isinstance(flow, LoadedFlow) else find_flow(str(flow))
        )
        if loaded.spec.name != old.flow.name:
            raise InputError(
                f"run '{rejected_run_id}' is a run of flow '{old.flow.name}', not '{loaded.spec.name}': "
                f"ask again with `starter.py run {old.flow.name} --again {rejected_run_id}`"
            )
        value = old.input if run_input is SAME_INPUT else run_input
        return self.request(loaded, value).model_copy(update={"asks_again": asked})

    async def ask_again(
        self,
        rejected_run_id: str,
        *,
        flow: str | Path | LoadedFlow | None = None,
        run_input: Any = SAME_INPUT,
        run_id: str | None = None,
    ) -> StartedRun:
        """Start a new run that asks again after people rejected `rejected_run_id`
        (`starter.py run FLOW --again RUN_ID`); see `again_request()`. The rejected run stays
        rejected: this is a run of its own, with its own gates, whose status and audit name it."""
        return await self.launch(
            await self.again_request(rejected_run_id, flow=flow, run_input=run_input), run_id=run_id
        )

    async def start_once(
        self, flow: str | Path | LoadedFlow, run_input: Any, *, run_id: str
    ) -> tuple[StartedRun, bool]:
        """Idempotent start under a caller-chosen id: `(run, created)`. Starting again with the same
        flow and input answers the run already started; another flow or input raises RunConflict."""
        loaded = flow if isinstance(flow, LoadedFlow) else find_flow(str(flow))
        try:
            return await self.start(loaded, run_input, run_id=run_id), True
        except EnsembleError as err:
            if "already exists" not in str(err):
                raise
        recorded = (await read_history(self.temporal, run_id)).request
        same = (
            recorded is not None
            and recorded.flow.name == loaded.spec.name
            and json.dumps(recorded.input, sort_keys=True) == json.dumps(run_input, sort_keys=True)
        )
        if recorded is None or not same:
            raise RunConflict(f"a run with id '{run_id}' already exists with another flow or input; choose another id")
        return StartedRun(run_id=run_id, flow=loaded.spec.name, task_queue=recorded.task_queue), False

    async def open_gate(self, run_id: str, gate: str) -> dict[str, Any] | None:
        """An open gate of the run (its name or path) as `pending` lists it, with what it shows its
        approvers (`show`, as the gate's last notification carried it); None when it is not open."""
        view = await self.status(run_id)
        found = next((g for g in view.pending_approvals if gate in (g.get("gate"), g.get("path"))), None)
        if found is None:
            return None
        record = await read_history(self.temporal, run_id)
        notes = [n.note for n in record.gate_notes if n.note.get("path") == found.get("path")]
        return {"run_id": run_id, "flow": view.flow, **found, "show": notes[-1].get("show") if notes else None}

    async def history_json(self, run_id: str) -> str:
        """The run's event history (its latest execution) as Temporal's JSON, as `starter.py history` writes it:
        values the run keeps in the payload store written in."""
        await get_run(self.temporal, run_id)  # a clear error for an unknown run
        history = await self.temporal.get_workflow_handle(run_id).fetch_history()
        await inline_stored(history.events, external_storage(), f"run {run_id}")  # a record on its own
        return history.to_json()

    async def timeline_svg(self, run_id: str) -> str:
        """A Gantt picture of the run as SVG (`starter.py timeline`)."""
        return timeline.render_svg(await self.status(run_id))

    async def dead_letters(self, *, flow: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Failed runs (`starter.py dlq list --json`)."""
        letters = await dlq.dead_letters(self.temporal, flow=flow, limit=limit)
        return [json.loads(json.dumps(letter.brief(), default=str)) for letter in letters]

    async def redrive(self, run_id: str) -> dict[str, Any]:
        """Resume a failed run from its failed step in a new run (`starter.py dlq redrive --json`)."""
        new_id, request = await dlq.redrive(self.temporal, run_id)
        return {"run_id": new_id, "redrive_of": run_id, "reused": list(request.reuse)}

    async def audit(self, run_id: str) -> dict[str, Any]:
        """Every decision of the run re-verified from its history (`starter.py audit --json`)."""
        return (await audit_run(self.temporal, run_id)).as_dict()

    async def status(self, run_id: str) -> RunStatusView:
        """Every step, gate round and decision of the run so far, read from its history."""
        return await describe_run(self.temporal, run_id)

    async def wait(
        self,
        run_id: str,
        *,
        until: Literal["gate", "end"] = "gate",
        timeout: float | None = None,
        serve: bool = False,
    ) -> RunOutcome:
        """Wait until the run ends, or (`until="gate"`) until it waits on people. With `timeout`
        (seconds) an unfinished run comes back as it stands (`running`). `serve` runs a worker in
        this process while waiting when no worker serves the run (what the CLI does)."""
        handle, desc = await get_run(self.temporal, run_id)
        serving = self.serving(run_id, desc.task_queue) if serve else contextlib.nullcontext()
        async with serving:
            waiting = inbox.settle(self.temporal, handle, stop_at_gate=until == "gate")
            try:
                raw = await asyncio.wait_for(waiting, timeout) if timeout is not None else await waiting
            except asyncio.TimeoutError:
                view = await self.status(run_id)
                return RunOutcome(run_id=run_id, status=view.status, pending_approvals=view.pending_approvals)
        return RunOutcome(
            run_id=run_id,
            status=raw["status"],
            result=raw.get("result"),
            error=raw.get("error"),
            pending_approvals=raw.get("pending_approvals") or [],
        )

    async def decide(
        self,
        run_id: str,
        gate: str,
        decision: Literal["approve", "reject", "request_changes"],
        *,
        by: str,
        comment: str = "",
        token: str | None = None,
        serve: bool = False,
    ) -> GateDecisionResult:
        """Send a person's decision on an open gate; the run itself validates it (EnsembleError
        with the run's reason when refused; nothing is recorded then). The decision carries its
        proof: `token` (a signed token from the organisation's identity provider, bound to this
        decision), else a proof signed with `by`'s local key when this machine holds one
        (`starter.py keys init`); a gate of a flow with `identity: asserted` takes the name."""
        _, desc = await get_run(self.temporal, run_id)
        request = GateDecision(gate=gate, decision=decision, by=by, comment=comment)
        serving = self.serving(run_id, desc.task_queue) if serve else contextlib.nullcontext()
        async with serving:  # a decision is validated by the run, so some worker must serve it
            return await inbox.decide(self.temporal, run_id, request, token)

    async def approve(self, run_id: str, gate: str, *, by: str, comment: str = "") -> GateDecisionResult:
        return await self.decide(run_id, gate, "approve", by=by, comment=comment)

    async def reject(self, run_id: str, gate: str, *, by: str, comment: str = "") -> GateDecisionResult:
        return await self.decide(run_id, gate, "reject", by=by, comment=comment)

    async def request_changes(self, run_id: str, gate: str, *, by: str, comment: str) -> GateDecisionResult:
        return await self.decide(run_id, gate, "request_changes", by=by, comment=comment)

    async def cancel(self, run_id: str, *, reason: str = "") -> None:
        """Ask a running run to cancel: it stops its agents, runs its compensations and ends
        `canceled`. Refused for a run that already ended."""
        handle, desc = await get_run(self.temporal, run_id)
        if desc.status != WorkflowExecutionStatus.RUNNING:
            status = (desc.status.name if desc.status else "ended").lower()
            raise EnsembleError(f"run '{run_id}' is {status}: only a running run can be canceled")
        try:
            await handle.cancel(reason=reason)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise EnsembleError(f"run '{run_id}' is no longer running") from None
            raise

    async def pending(self, approver: str | None = None, groups: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Every gate waiting on people across the namespace (only those `approver` may decide
        now, directly or through one of `groups`, when given): run_id, flow, gate, approvers,
        groups, tier, quorum, approvals, opened_at, deadline."""
        return await inbox.pending(self.temporal, approver, groups)

    # ------------------------------------------------------------ workers in this process

    @contextlib.asynccontextmanager
    async def worker(self, task_queue: str | None = None) -> AsyncIterator[None]:
        """Run a worker (flows and agents) in this process until the block ends: for scripts,
        notebooks and tests. Production runs `python worker.py` processes instead."""
        from ensemble.runtime.worker import build_worker  # the worker's modules load with the first worker

        async with build_worker(
            self.temporal, task_queue or default_task_queue(), identity=connection.cli_worker_identity()
        ):
            yield

    def serving(
        self,
        run_id: str,
        queue: str,
        on_note: Callable[[str], None] | None = None,
        on_broken: Callable[[str], None] | None = None,
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """While the caller waits on a run, make sure some worker serves its task queue
        (`ensemble.runs.live.serving`: a worker in this process when nobody polls it or the run's
        work sits untaken; an embedded server that dies or breaks ends the wait)."""
        return live.serving(self.temporal, run_id, queue, on_note, on_broken)
