"""The sandbox answers a payload's serialization context and storage target without stepping into
the run where the answer cannot change the payload, and asks the run everywhere else: on a real
server, against the SDK's own sandbox."""

from __future__ import annotations

import collections
import dataclasses
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.converter import (
    ActivitySerializationContext,
    ExternalStorage,
    PayloadCodec,
    SerializationContext,
    StorageDriver,
    StorageDriverClaim,
    StorageDriverRetrieveContext,
    StorageDriverSelectContext,
    StorageDriverStoreContext,
    WithSerializationContext,
)
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from ensemble.runtime import sandbox
from ensemble.runtime.converter import data_converter
from ensemble.runtime.worker import workflow_runner
from ensemble.spec import FlowOutcome
from tests.conftest import running_worker
from tests.flowkit import request, start
from tests.workflows.test_hierarchical import SHOUT_COUNT, supervised


class UnusedDriver(StorageDriver):
    """A store the selector below never picks: every payload stays inline."""

    def name(self) -> str:
        return "unused"

    async def store(self, context: StorageDriverStoreContext, payloads: Sequence[Payload]) -> list[StorageDriverClaim]:
        raise AssertionError("the selector keeps every payload inline")

    async def retrieve(
        self, context: StorageDriverRetrieveContext, claims: Sequence[StorageDriverClaim]
    ) -> list[Payload]:
        raise AssertionError("nothing was stored")


class TargetRecorder:
    """A driver selector that records the target the SDK would store each payload under, and
    keeps the payload inline."""

    def __init__(self) -> None:
        self.targets: list[Any] = []

    def __call__(self, context: StorageDriverSelectContext, payload: Payload) -> StorageDriver | None:
        self.targets.append(context.target)
        return None


class ContextCodec(PayloadCodec, WithSerializationContext):
    """A codec that reads its serialization context (as one binding ciphertexts to an activity
    would): it records each context it is given."""

    def __init__(self, seen: list[tuple[str, str, str]], context: SerializationContext | None = None) -> None:
        self.seen = seen
        self.context = context

    def with_context(self, context: SerializationContext) -> ContextCodec:
        return ContextCodec(self.seen, context)

    def _record(self, op: str, payloads: Sequence[Payload]) -> list[Payload]:
        activity = self.context.activity_type if isinstance(self.context, ActivitySerializationContext) else ""
        self.seen.extend((op, type(self.context).__name__, activity) for _ in payloads)
        return list(payloads)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return self._record("encode", payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return self._record("decode", payloads)


def client_with(client: Client, **converter: Any) -> Client:
    return Client(
        client.service_client,
        namespace=client.namespace,
        data_converter=dataclasses.replace(client.data_converter, **converter),
    )


def test_ensemble_converters_read_no_context_and_a_context_codec_does():
    assert sandbox.context_free(data_converter())
    assert not sandbox.context_free(dataclasses.replace(data_converter(), payload_codec=ContextCodec([])))
    assert workflow_runner(data_converter()).context_free  # type: ignore[attr-defined]
    assert not workflow_runner().context_free  # type: ignore[attr-defined]  # no converter: ask the run


class CountingSteps:
    """Counts the SDK sandbox's own answers (each one a step into the run)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        sdk = sandbox._SdkInstance
        for name in ("get_serialization_context", "get_external_store_context"):
            original = getattr(sdk, name)

            def counted(instance: Any, command_info: Any, _original: Any = original, _name: str = name) -> Any:
                self.calls[_name] += 1
                return _original(instance, command_info)

            monkeypatch.setattr(sdk, name, counted)


def sdk_sandbox(runner: str) -> dict[str, Any]:
    """Worker options: Ensemble's sandbox (the default), or the SDK's own with the same restrictions."""
    return {} if runner == "ensemble" else {"workflow_runner": SandboxedWorkflowRunner(workflow_runner().restrictions)}


async def supervised_run(client: Client, task_queue: str, **worker: Any) -> tuple[str, FlowOutcome]:
    async with running_worker(client, task_queue, max_cached_workflows=0, **worker):
        handle = await start(client, request(supervised(), {"text": "one two", "plan": SHOUT_COUNT}, task_queue))
        outcome = await handle.result()
    return handle.id, outcome


def targets(recorder: TargetRecorder, run_id: str) -> collections.Counter[tuple[Any, ...]]:
    """What each payload would be stored under, with the run's own id named ROOT."""
    return collections.Counter(
        (t.id.replace(run_id, "ROOT"), t.run_id is not None, t.type, t.namespace) for t in recorder.targets
    )


async def test_every_payload_is_offered_to_the_store_for_the_target_the_sdk_sandbox_gives(dev_server, monkeypatch):
    # Every payload of a supervisor's run, its child workflows and their activities is offered to
    # the store (threshold 0; the selector records its target and keeps it inline), once in
    # Ensemble's sandbox and once in the SDK's own.
    steps = CountingSteps(monkeypatch)
    seen = {}
    for runner in ("ensemble", "sdk"):
        recorder = TargetRecorder()
        store = ExternalStorage(drivers=[UnusedDriver()], driver_selector=recorder, payload_size_threshold=0)
        client = client_with(dev_server.client, external_storage=store)
        steps.calls.clear()
        run_id, outcome = await supervised_run(client, f"test-{uuid.uuid4().hex[:12]}", **sdk_sandbox(runner))
        assert outcome.state["lead"]["results"]["size"] == {"chars": 7, "words": 2}
        seen[runner] = (targets(recorder, run_id), dict(steps.calls))
    (ours, our_steps), (sdks, sdk_steps) = seen["ensemble"], seen["sdk"]
    assert ours == sdks
    assert any(target[0] == "ROOT/lead.loud" for target in ours)  # children's payloads: their own target
    # Ensemble's sandbox stepped into a run only for the commands that target another run (the
    # children's starts and results), never for a context; the SDK's for every payload.
    assert our_steps.get("get_serialization_context", 0) == 0
    assert 0 < our_steps["get_external_store_context"] < sdk_steps["get_external_store_context"] / 3
    assert sdk_steps["get_serialization_context"] > 0


async def test_a_converter_that_reads_contexts_is_given_what_the_sdk_sandbox_gives(dev_server, monkeypatch):
    # A codec that reads its context sees, payload by payload, the contexts it sees in the SDK's
    # own sandbox: the workflow side asks the run for each activity's.
    steps = CountingSteps(monkeypatch)
    seen: dict[str, collections.Counter[tuple[str, str, str]]] = {}
    for runner in ("ensemble", "sdk"):
        record: list[tuple[str, str, str]] = []
        client = client_with(dev_server.client, payload_codec=ContextCodec(record))
        steps.calls.clear()
        _, outcome = await supervised_run(client, f"test-{uuid.uuid4().hex[:12]}", **sdk_sandbox(runner))
        assert outcome.state["lead"]["results"]["loud"] == {"text": "ONE TWO"}
        seen[runner] = collections.Counter(record)
        assert steps.calls["get_serialization_context"] > 0
    assert seen["ensemble"] == seen["sdk"]
    assert seen["ensemble"][("encode", "ActivitySerializationContext", "shout")] >= 2  # scheduled, completed
