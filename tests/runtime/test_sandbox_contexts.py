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
        self.seen.extend((op, type(self.context).__name__, activity or "") for _ in payloads)
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


async def test_the_sandbox_answers_each_payload_as_the_run_would(dev_server, monkeypatch):
    # Every payload of a supervisor's run, its child workflows and their activities is offered to
    # the store (threshold 0; the selector records its target and keeps it inline). Each time
    # Ensemble's sandbox answers a payload's context or storage target, the run is asked too (the
    # SDK's own answer), and the two must give the same converter and the same target.
    recorder = TargetRecorder()
    store = ExternalStorage(drivers=[UnusedDriver()], driver_selector=recorder, payload_size_threshold=0)
    client = client_with(dev_server.client, external_storage=store)
    converter = client.data_converter
    ours_store = sandbox._CompiledInstance.get_external_store_context
    ours_context = sandbox._CompiledInstance.get_serialization_context
    answered: collections.Counter[str] = collections.Counter()
    wrong: list[Any] = []

    def store_target(instance: Any, command_info: Any) -> Any:
        mine = ours_store(instance, command_info)
        answered["store"] += 1
        if mine != sandbox._SdkInstance.get_external_store_context(instance, command_info):
            wrong.append(("store", command_info, mine))
        return mine

    def context(instance: Any, command_info: Any) -> Any:
        mine = ours_context(instance, command_info)
        theirs = sandbox._SdkInstance.get_serialization_context(instance, command_info)
        answered["context"] += 1
        if mine is None or theirs is None or converter.with_context(mine) is not converter.with_context(theirs):
            wrong.append(("context", command_info, mine, theirs))
        return mine

    monkeypatch.setattr(sandbox._CompiledInstance, "get_external_store_context", store_target)
    monkeypatch.setattr(sandbox._CompiledInstance, "get_serialization_context", context)
    run_id, outcome = await supervised_run(client, f"test-{uuid.uuid4().hex[:12]}")
    assert outcome.state["lead"]["results"]["size"] == {"chars": 7, "words": 2}
    assert not wrong, wrong[:3]
    assert answered["store"] > 20 and answered["context"] > 20, answered
    ids = {target.id.replace(run_id, "ROOT") for target in recorder.targets}
    assert {"ROOT", "ROOT/lead.loud", "ROOT/lead.words", "ROOT/lead.size"} <= ids  # children: their own target


async def test_ensemble_sandbox_steps_into_a_run_only_for_another_runs_payloads(dev_server, monkeypatch):
    steps = CountingSteps(monkeypatch)
    store = ExternalStorage(drivers=[UnusedDriver()], driver_selector=TargetRecorder(), payload_size_threshold=0)
    for runner in ("ensemble", "sdk"):
        steps.calls.clear()
        client = client_with(dev_server.client, external_storage=store)
        await supervised_run(client, f"test-{uuid.uuid4().hex[:12]}", **sdk_sandbox(runner))
        if runner == "ensemble":  # only the children's starts and results, never a context
            assert steps.calls["get_serialization_context"] == 0, steps.calls
            assert steps.calls["get_external_store_context"] > 0, steps.calls
        else:  # the SDK's own sandbox: every payload, both questions
            assert steps.calls["get_serialization_context"] > 0, steps.calls


async def test_a_converter_that_reads_contexts_is_given_what_the_sdk_sandbox_gives(dev_server, monkeypatch):
    # A codec that reads its context sees the contexts it sees in the SDK's own sandbox: the
    # workflow side asks the run for each activity's. (Kinds, not counts: how many workflow tasks
    # a run takes depends on timing.)
    steps = CountingSteps(monkeypatch)
    seen: dict[str, set[tuple[str, str, str]]] = {}
    for runner in ("ensemble", "sdk"):
        record: list[tuple[str, str, str]] = []
        client = client_with(dev_server.client, payload_codec=ContextCodec(record))
        steps.calls.clear()
        _, outcome = await supervised_run(client, f"test-{uuid.uuid4().hex[:12]}", **sdk_sandbox(runner))
        assert outcome.state["lead"]["results"]["loud"] == {"text": "ONE TWO"}
        seen[runner] = set(record)
        assert steps.calls["get_serialization_context"] > 0
    assert seen["ensemble"] == seen["sdk"]
    assert ("encode", "ActivitySerializationContext", "shout") in seen["ensemble"]


class MemoryDriver(StorageDriver):
    """A store that is not content-addressed: every payload stored gets a key of its own."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.targets: set[str] = set()

    def name(self) -> str:
        return "memory"

    async def store(self, context: StorageDriverStoreContext, payloads: Sequence[Payload]) -> list[StorageDriverClaim]:
        if context.target is not None:
            self.targets.add(getattr(context.target, "id", ""))
        claims = []
        for payload in payloads:
            key = uuid.uuid4().hex
            self.blobs[key] = payload.SerializeToString()
            claims.append(StorageDriverClaim(claim_data={"key": key}))
        return claims

    async def retrieve(
        self, context: StorageDriverRetrieveContext, claims: Sequence[StorageDriverClaim]
    ) -> list[Payload]:
        return [Payload.FromString(self.blobs[c.claim_data["key"]]) for c in claims]


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "deflate"])
@pytest.mark.parametrize("runner", ["ensemble", "sdk"])
async def test_every_payload_stored_by_reference_reads_back_in_either_sandbox(
    dev_server, monkeypatch, runner, compressed
):
    # Every payload of a supervisor's run and its children goes to a store that is not
    # content-addressed (a 1-byte threshold: even a reference's own payload would qualify), and
    # the run reads each back: the children's results reach the supervisor as values.
    if compressed:
        monkeypatch.setenv("ENSEMBLE_PAYLOAD_COMPRESSION", "deflate")
    driver = MemoryDriver()
    store = ExternalStorage(drivers=[driver], payload_size_threshold=1)
    client = Client(
        dev_server.client.service_client,
        namespace=dev_server.client.namespace,
        data_converter=dataclasses.replace(data_converter(), external_storage=store),
    )
    run_id, outcome = await supervised_run(client, f"test-{uuid.uuid4().hex[:12]}", **sdk_sandbox(runner))
    assert outcome.state["lead"]["results"]["size"] == {"chars": 7, "words": 2}
    assert outcome.state["lead"]["results"]["loud"] == {"text": "ONE TWO"}
    assert len(driver.blobs) > 20
    ids = {target.replace(run_id, "ROOT") for target in driver.targets}
    assert {"ROOT", "ROOT/lead.loud", "ROOT/lead.size"} <= ids, ids
