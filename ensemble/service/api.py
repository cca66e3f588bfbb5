"""The REST API (under /api), over `ensemble.client.EnsembleClient`. See docs/service.md."""

from __future__ import annotations

import os
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from ensemble.client import EnsembleClient, FlowInfo, RunOutcome, StartedRun
from ensemble.logic.proofs import binding, binding_hash
from ensemble.runs import inbox
from ensemble.service import events
from ensemble.service.auth import Principal, RateLimiter, Roles, ServiceError, verify_bearer
from ensemble.spec import GROUP_PREFIX, RunStatusView
from ensemble.spec.errors import EnsembleError

RUN_ID = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$"
NAME = r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,199}$"
FLOW = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"  # a flow's name: never a path on the service's machine
MAX_WAIT_S = 60.0


class StartRequest(BaseModel):
    flow: str = Field(pattern=FLOW, description="a flow name (`GET /api/flows`)")
    input: Any = Field(description="the run's input, as the flow's input schema says")
    run_id: str | None = Field(
        None, pattern=RUN_ID, description="a client-chosen id: starting twice with it is idempotent"
    )


class StartAnswer(StartedRun):
    created: bool


class DecisionRequest(BaseModel):
    decision: Literal["approve", "reject", "request_changes"]
    comment: str = Field("", max_length=4000)
    proof: str | None = Field(
        None, max_length=16000, description="an identity provider's token binding this decision (its nonce)"
    )


class CancelRequest(BaseModel):
    reason: str = Field("", max_length=1000)


class Identity(BaseModel):
    subject: str
    issuer: str
    groups: list[str]
    grants: list[str]


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorAnswer(BaseModel):
    error: ErrorBody


ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorAnswer} for s in (400, 401, 403, 404, 409, 422, 429, 503)}


class Service:
    """What every request needs: the client, the roles, the rate limits."""

    def __init__(self, client: EnsembleClient, roles: Roles | None = None) -> None:
        self.client = client
        self.roles = roles or Roles()
        self.start_limit = RateLimiter(os.environ.get("ENSEMBLE_SERVICE_RATE_START") or "30/60")
        self.decide_limit = RateLimiter(os.environ.get("ENSEMBLE_SERVICE_RATE_DECIDE") or "60/60")


def service(request: Request) -> Service:
    return request.app.state.service


def caller(authorization: Annotated[str | None, Header(description="Bearer TOKEN")] = None) -> Principal:
    return verify_bearer(authorization)


Caller = Annotated[Principal, Depends(caller)]
Svc = Annotated[Service, Depends(service)]

router = APIRouter(prefix="/api", responses=ERRORS)


async def may_read(svc: Service, who: Principal, run_id: str) -> RunStatusView | None:
    """Readers read every run; an approver reads the runs waiting on them (the run's status when
    it had to be read to know)."""
    if svc.roles.may(who, "read"):
        return None
    try:
        view = await svc.client.status(run_id)
    except EnsembleError:  # whether a run exists is not for a caller who may not read it
        view = None
    if view is not None and any(approves(who, g) for g in view.pending_approvals):
        return view
    raise ServiceError(
        403, "forbidden", f"'{who.subject}' may not read run '{run_id}': the roles file grants no 'read'"
    )


def approves(who: Principal, gate: dict[str, Any]) -> bool:
    """Whether the caller may see and decide an open gate: one of its people, or a member (by
    their identity provider's groups claim) of one of the tier's groups. The run's validator is
    the final judge of the decision itself (its proof must name the caller, and their groups)."""
    return inbox.waits_on(gate, who.subject, [] if who.local else who.groups)


async def _open(svc: Service, run_id: str, gate: str) -> dict[str, Any] | None:
    view = await svc.client.status(run_id)
    return next((g for g in view.pending_approvals if gate in (g.get("gate"), g.get("path"))), None)


@router.get("/whoami", summary="Who the bearer token names, and what they may do")
async def whoami(who: Caller, svc: Svc) -> Identity:
    return Identity(subject=who.subject, issuer=who.issuer, groups=who.groups, grants=sorted(svc.roles.grants(who)))


@router.get("/flows", summary="The flows this service can start")
async def list_flows(who: Caller, svc: Svc) -> list[FlowInfo]:
    return svc.client.flows()


@router.post(
    "/runs",
    summary="Start a run (idempotent with a client-chosen run_id)",
    status_code=201,
    responses={200: {"model": StartAnswer, "description": "the run this id already names (same flow and input)"}},
)
async def start_run(body: StartRequest, who: Caller, svc: Svc) -> Any:
    if not svc.roles.may_start(who, body.flow):
        raise ServiceError(
            403,
            "forbidden",
            f"'{who.subject}' may not start flow '{body.flow}': the roles file grants no 'start:{body.flow}'",
        )
    known = sorted(f.name for f in svc.client.flows())
    if body.flow not in known:  # by name only: a request never makes the service read a file it names
        raise ServiceError(400, "invalid_input", f"unknown flow '{body.flow}' (known flows: {', '.join(known)})")
    svc.start_limit.take(who.subject, "start")
    run_id = body.run_id or f"{body.flow}-{uuid.uuid4().hex[:8]}"
    started, created = await svc.client.start_once(body.flow, body.input, run_id=run_id)
    answer = StartAnswer(**started.model_dump(), created=created)
    return JSONResponse(answer.model_dump(), status_code=201 if created else 200)


@router.get("/runs/{run_id}", summary="A run's status: steps, gates, decisions, usage")
async def run_status(run_id: str, who: Caller, svc: Svc) -> dict[str, Any]:
    view = await may_read(svc, who, run_id) or await svc.client.status(run_id)
    return view.model_dump(mode="json")


@router.get("/runs/{run_id}/result", summary="Wait for the run's end (or its next gate) up to `timeout` seconds")
async def run_result(
    run_id: str,
    who: Caller,
    svc: Svc,
    until: Literal["end", "gate"] = "end",
    timeout: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 30.0,
) -> RunOutcome:
    await may_read(svc, who, run_id)
    return await svc.client.wait(run_id, until=until, timeout=timeout)


@router.post("/runs/{run_id}/cancel", summary="Cancel a running run", status_code=202)
async def cancel_run(run_id: str, who: Caller, svc: Svc, body: CancelRequest | None = None) -> dict[str, Any]:
    svc.roles.require(who, "cancel", f"cancel run '{run_id}'")
    await svc.client.cancel(run_id, reason=(body.reason if body else "") or f"canceled by {who.subject}")
    return {"run_id": run_id, "status": "canceling"}


@router.get("/approvals", summary="The gates waiting on the caller")
async def my_approvals(who: Caller, svc: Svc) -> list[dict[str, Any]]:
    return await inbox.pending(svc.client.temporal, who.subject, [] if who.local else who.groups)


@router.post(
    "/runs/{run_id}/gates/{gate}/decision", summary="Approve, reject or request changes at a gate, as the caller"
)
async def decide(run_id: str, gate: str, body: DecisionRequest, who: Caller, svc: Svc) -> dict[str, Any]:
    svc.decide_limit.take(who.subject, "decision")
    open_gate = await _open(svc, run_id, gate)
    if open_gate is None:
        raise ServiceError(409, "refused", f"run '{run_id}' has no open gate '{gate}'")
    if not approves(who, open_gate):
        raise ServiceError(
            403,
            "forbidden",
            f"'{who.subject}' is not an approver of gate '{gate}' "
            f"(approvers: {', '.join(open_gate.get('approvers') or [])}"
            + "".join(f"; or a member of {GROUP_PREFIX}{g}" for g in open_gate.get("groups") or [])
            + ")",
        )
    if body.decision == "request_changes" and not body.comment.strip():
        raise ServiceError(400, "invalid_input", "request_changes needs a comment saying what to change")
    token = body.proof
    if token is None and not who.local:
        raise ServiceError(
            400,
            "proof_required",
            "a decision with an identity provider's token needs `proof`: a token whose nonce binds it "
            f"(GET /api/runs/{run_id}/gates/{gate}/binding)",
        )
    result = await svc.client.decide(run_id, gate, body.decision, by=who.subject, comment=body.comment, token=token)
    return result.model_dump(mode="json")


@router.get("/runs/{run_id}/gates/{gate}", summary="An open gate with what it shows its approvers")
async def gate_view(run_id: str, gate: str, who: Caller, svc: Svc) -> dict[str, Any]:
    found = await svc.client.open_gate(run_id, gate)
    if found is None:
        raise ServiceError(404, "not_found", f"run '{run_id}' has no open gate '{gate}'")
    if not approves(who, found) and not svc.roles.may(who, "read"):
        raise ServiceError(
            403, "forbidden", f"'{who.subject}' is not an approver of gate '{gate}' and may not read runs"
        )
    return found


@router.get(
    "/runs/{run_id}/gates/{gate}/binding",
    summary="What a decision's proof must bind (the nonce for an identity provider)",
)
async def gate_binding(
    run_id: str,
    gate: str,
    who: Caller,
    svc: Svc,
    decision: Literal["approve", "reject", "request_changes"] = "approve",
    comment: str = "",
) -> dict[str, Any]:
    g = await _open(svc, run_id, gate)
    if g is None:
        raise ServiceError(409, "refused", f"run '{run_id}' has no open gate '{gate}'")
    if not approves(who, g):
        raise ServiceError(403, "forbidden", f"'{who.subject}' is not an approver of gate '{gate}'")
    bound = binding(
        run_id,
        g.get("path") or gate,
        int(g.get("round") or 0),
        int(g.get("tier") or 0),
        {"decision": decision, "comment": comment},
        g.get("digest") or "",
    )
    return {"binding": bound, "nonce": binding_hash(bound)}


@router.get("/runs/{run_id}/decisions", summary="Every decision of the run, re-verified from its history")
async def run_decisions(run_id: str, who: Caller, svc: Svc) -> dict[str, Any]:
    await may_read(svc, who, run_id)
    return await svc.client.audit(run_id)


@router.get(
    "/runs/{run_id}/timeline.svg",
    summary="The run's timeline as SVG",
    response_class=Response,
    responses={200: {"content": {"image/svg+xml": {}}}},
)
async def run_timeline(run_id: str, who: Caller, svc: Svc) -> Response:
    await may_read(svc, who, run_id)
    return Response(await svc.client.timeline_svg(run_id), media_type="image/svg+xml")


@router.get(
    "/runs/{run_id}/history",
    summary="The run's event history (Temporal's JSON)",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}}},
)
async def run_history(run_id: str, who: Caller, svc: Svc) -> Response:
    await may_read(svc, who, run_id)
    return Response(await svc.client.history_json(run_id), media_type="application/json")


@router.get(
    "/runs/{run_id}/events",
    summary="Live progress as server-sent events (resumable with Last-Event-ID)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def run_events(
    run_id: str,
    who: Caller,
    svc: Svc,
    last_event_id: Annotated[str | None, Header(description="resume after this event id")] = None,
) -> StreamingResponse:
    await may_read(svc, who, run_id)
    await svc.client.temporal.get_workflow_handle(run_id).describe()  # 404 for an unknown run, before the stream opens
    after = int(last_event_id) if last_event_id and last_event_id.strip().isdigit() else 0

    return StreamingResponse(
        events.stream(svc.client.temporal, run_id, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/dlq", summary="Failed runs (the dead-letter queue)")
async def dlq_list(
    who: Caller,
    svc: Svc,
    flow: Annotated[str | None, Query(pattern=FLOW)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[dict[str, Any]]:
    svc.roles.require(who, "read", "list failed runs")
    return await svc.client.dead_letters(flow=flow, limit=limit)


@router.post("/dlq/{run_id}/redrive", summary="Resume a failed run from its failed step", status_code=201)
async def dlq_redrive(run_id: str, who: Caller, svc: Svc) -> dict[str, Any]:
    svc.roles.require(who, "redrive", f"redrive run '{run_id}'")
    return await svc.client.redrive(run_id)
