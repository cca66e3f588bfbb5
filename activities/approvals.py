"""The two activities behind approval gates: resolving who may decide (groups from the approvers
file on the worker) and notifying people when a gate opens, escalates or is decided.

Notifications POST a GateEvent as JSON to $ENSEMBLE_APPROVAL_WEBHOOK, retried like any activity
(429/5xx/timeouts retry, honouring Retry-After). With no URL configured the event is only logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
from temporalio import activity

from ensemble.activities.errors import classify_status, permanent, transient
from ensemble.authoring import approvers
from ensemble.identity import keys
from ensemble.spec import GateEvent, protocol
from ensemble.spec.errors import InputError
from ensemble.spec.gate import TierTrust

RESOLVE = protocol.RESOLVE_APPROVERS
RESOLVE_TRUST = protocol.RESOLVE_APPROVER_KEYS
NOTIFY = protocol.NOTIFY
WEBHOOK_ENV = "ENSEMBLE_APPROVAL_WEBHOOK"
SERVICE_URL_ENV = "ENSEMBLE_SERVICE_URL"  # the service's public address: notifications link to the gate's page
log = logging.getLogger("ensemble.approvals")


@activity.defn(name=RESOLVE)
async def resolve_approvers(names: list[str]) -> list[str]:
    """The people a gate tier names (users and group members), as configured on this worker."""
    try:
        return approvers.resolve(names)
    except InputError as err:
        raise permanent(str(err), kind="ApproversNotFound") from None


@activity.defn(name=RESOLVE_TRUST)
async def resolve_trust(tier: dict) -> TierTrust:
    """A tier's people (users and group members) and the public keys that prove them, as configured
    on this worker; refused for good when the tier's quorum cannot be met."""
    names, quorum = list(tier["approvers"]), int(tier.get("quorum", 1))
    try:
        groups = approvers.load_groups()
        people = approvers.resolve(names, groups)
        trust = keys.tier_trust(people, approvers.tier_groups(names, groups), str(approvers.config_path()))
    except InputError as err:
        raise permanent(str(err), kind="ApproversNotFound") from None
    by_claim = any(i.groups_claim for i in trust.issuers) and bool(trust.groups)
    if quorum > len(people) and not by_claim:
        raise permanent(
            f"quorum {quorum} cannot be met: approvers {', '.join(names)} resolve to {len(people)} "
            f"({', '.join(people)}) in {approvers.config_path()}; add people or lower the quorum",
            kind="QuorumUnreachable",
        )
    return trust


@activity.defn(name=NOTIFY)
async def notify(event: GateEvent) -> bool:
    """Tell people about a gate event; True when it was posted, False when no webhook is set."""
    url = os.environ.get(WEBHOOK_ENV)
    what = f"gate '{event.gate}' of run {event.run_id} {event.event} (tier {event.tier}, approvers {', '.join(event.approvers)})"
    if not url:
        log.info("%s; no %s configured, not posted", what, WEBHOOK_ENV)
        return False
    who = "the approval webhook"
    try:
        async with httpx.AsyncClient(follow_redirects=False, timeout=10.0) as http:
            response = await http.post(url, json=_posted(event), headers={"X-Ensemble-Run-Id": event.run_id})
    except httpx.TimeoutException:
        raise transient(f"{who} timed out", kind="Timeout") from None
    except httpx.TransportError as err:
        raise transient(f"{who} is unreachable: {type(err).__name__}", kind="Unreachable") from None
    if response.status_code >= 300:
        raise classify_status(response.status_code, who=who, retry_after=response.headers.get("retry-after"))
    log.info("%s; posted", what)
    return True


def _posted(event: GateEvent) -> dict:
    """The event as posted, with `link` to the gate's page on the service when ENSEMBLE_SERVICE_URL is set."""
    body = event.model_dump(mode="json")
    base = (os.environ.get(SERVICE_URL_ENV) or "").rstrip("/")
    if base:
        body["link"] = f"{base}/ui/runs/{quote(event.run_id, safe='')}?gate={quote(event.gate, safe='')}"
    return body


ACTIVITIES: list[Callable[..., Any]] = [resolve_approvers, resolve_trust, notify]
