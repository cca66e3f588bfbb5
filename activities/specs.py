"""Agent specs named by digest: a step's activity input names its agent's spec by a digest
(`AgentCall.to_wire(..., by_digest=True)`) instead of carrying it, since the run's start event
already holds every agent it uses. A worker reads the spec there the first time it meets a digest
and keeps it (specs are content-addressed, so what it keeps is right for every run that names the
same digest); the history stays enough on its own to read and replay a run.

The start event read is the first event of the workflow run that scheduled the step: a flow run's
request (`RunRequest.agents`) or a group chat's input (`ChatInput.agents`, again after every
continue-as-new)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.exceptions import ApplicationError

from ensemble.runtime import flow_versions
from ensemble.spec import AgentSpec, RunRequest, protocol, versions
from ensemble.spec.chat import ChatInput
from ensemble.spec.run import SPEC_REF, agent_wire, spec_digest

KEPT = 4096  # specs a worker keeps by digest (a few hundred bytes each), least recently used out first

_kept: OrderedDict[str, dict[str, Any]] = OrderedDict()
_reading: dict[str, asyncio.Future[None]] = {}  # digest -> a read of a start event that holds it


def keep(agents: dict[str, AgentSpec]) -> None:
    """Keep these agents' wire specs by digest."""
    for agent in agents.values():
        wire = agent_wire(agent)
        digest = spec_digest(wire)
        _kept[digest] = wire
        _kept.move_to_end(digest)
    while len(_kept) > KEPT:
        _kept.popitem(last=False)


def agents_of(workflow_type: str, data: Any) -> dict[str, AgentSpec]:
    """The agents a workflow's input holds."""
    if workflow_type == protocol.CHAT_WORKFLOW:
        return dict(ChatInput.model_validate(data).agents)
    return dict(RunRequest.model_validate(data).agents)


async def spec_by_digest(ref: str) -> dict[str, Any]:
    """The wire spec this activity's input names (`"#" + digest`), from what this worker keeps or
    from the start event of the workflow run that scheduled it."""
    digest = ref.removeprefix(SPEC_REF)
    if (wire := _kept.get(digest)) is not None:
        _kept.move_to_end(digest)
        return dict(wire)
    info = activity.info()
    while (reading := _reading.get(digest)) is not None:  # another step of a run that names it reads
        await asyncio.wait([reading])
        if (wire := _kept.get(digest)) is not None:
            return dict(wire)
    reading = _reading[digest] = asyncio.get_running_loop().create_future()
    try:
        keep(await _start_agents(info.workflow_id or "", info.workflow_run_id or "", info.workflow_type or ""))
    finally:  # waiting steps look again; if this read failed, one of them reads for itself
        del _reading[digest]
        reading.set_result(None)
    if (wire := _kept.get(digest)) is not None:
        return dict(wire)
    raise ApplicationError(
        f"agent '{info.activity_type}': its spec (digest {digest}) is not in the start event of run "
        f"{info.workflow_id} as this worker reads it: the worker that scheduled the step runs another version of "
        "Ensemble; upgrade workers that run agents with or before those that run flows",
        type="AgentSpecUnknown",
    )


async def _start_agents(workflow_id: str, run_id: str, workflow_type: str) -> dict[str, AgentSpec]:
    client = activity.client()
    handle = client.get_workflow_handle(workflow_id, run_id=run_id or None)
    async for event in handle.fetch_history_events(page_size=1):
        if event.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            break
        payloads = event.workflow_execution_started_event_attributes.input.payloads
        if not payloads:
            break
        [data, *_] = await client.data_converter.decode(payloads)
        data = await flow_versions.resolve(client, data)  # a run that names its flow's version
        if isinstance(data, dict) and versions.REF in data:
            raise ApplicationError(
                f"run {workflow_id} names flow version {data[versions.REF]}, whose record this worker cannot read",
                type="FlowVersionUnknown",
            )
        try:
            return agents_of(workflow_type, data)
        except ValueError:  # not the input of a flow run or a chat: nothing here names specs
            raise ApplicationError(
                f"run {workflow_id} ({workflow_type}) holds no agent specs in its start event: only Ensemble's "
                "flow runs and chats name an agent's spec by digest",
                type="AgentSpecUnknown",
                non_retryable=True,
            ) from None
    raise ApplicationError(f"run {workflow_id}: its history has no start event with an input", type="AgentSpecUnknown")
