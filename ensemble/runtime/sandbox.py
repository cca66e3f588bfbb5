"""The workflow sandbox Ensemble's workers run in: Temporal's own, minus a repeated compile and
needless steps into the sandbox.

Temporal's sandbox steps into a run by `exec`-ing a short snippet of source (import the workflow,
activate it, ask it for a payload's serialization context), and it compiles that snippet again on
every call: several times per workflow task, once per payload. In a profile of a worker running
short runs that compiling was about a fifth of the worker's CPU. `CompiledSandboxRunner` hands the same snippets to the same sandbox as
code objects compiled once per process; what runs inside, and every restriction, is unchanged.

For every payload of a workflow task (six passes: three over the activation, three over the
completion) the SDK also steps into the sandbox to ask the run which serialization context, and
which external-storage target, the payload's command has. A worker whose data converter reads no
serialization context (Ensemble's never does: `DataConverter.with_context` returns the converter
itself) gets the same converter whatever the answer, so the run's workflow context is answered
without stepping in; and the storage target of a payload that belongs to no command or to an
activity is always the run itself, answered the same way. Other commands (a child workflow, a
signal to another run, a child's result) still ask the run. In a profile at 1,000 model-bound runs
in flight these steps were 4-9 % of the worker's CPU.

The snippets are reached through a private hook of the SDK (`_Instance._run_code`); should a
release move it, `sandbox_runner` falls back to the SDK's runner as it is (slower, same result),
and `tests/runtime/test_worker_sandbox.py` fails so the change is noticed.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from types import CodeType
from typing import Any

from temporalio.api.enums.v1 import CommandType
from temporalio.converter import (
    ActivitySerializationContext,
    DataConverter,
    SerializationContext,
    StorageDriverStoreContext,
    StorageDriverWorkflowInfo,
    WorkflowSerializationContext,
)
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

try:  # the SDK's private sandbox instance: the only way to reach the snippets
    from temporalio.worker.workflow_sandbox._runner import _Instance as _SdkInstance
except ImportError:  # pragma: no cover - depends on the installed SDK
    _SdkInstance = None  # type: ignore[assignment,misc]


@functools.lru_cache(maxsize=512)
def _compiled(source: str) -> CodeType:
    # The snippets are the SDK's constants, plus one import line per workflow class: few, and
    # bounded by the cache either way. "<string>" is what exec names uncompiled source.
    return compile(source, "<string>", "exec")


def hook_available() -> bool:
    """Whether this SDK release still runs its snippets through `_Instance._run_code(code, **g)`."""
    run_code = getattr(_SdkInstance, "_run_code", None)
    if run_code is None:
        return False
    params = list(inspect.signature(run_code).parameters.values())
    return len(params) == 3 and params[1].name == "code" and params[2].kind is inspect.Parameter.VAR_KEYWORD


def context_free(converter: DataConverter) -> bool:
    """Whether no part of `converter` reads a serialization context: given one, the SDK's
    `with_context` returns the converter itself (Ensemble's converters, with or without
    compression, encryption and a payload store)."""
    probes: tuple[SerializationContext, ...] = (
        WorkflowSerializationContext(namespace="n", workflow_id="w"),
        ActivitySerializationContext(
            namespace="n",
            activity_id="a",
            activity_type="t",
            activity_task_queue="q",
            workflow_id="w",
            workflow_type="f",
            is_local=False,
        ),
    )
    return all(converter.with_context(probe) is converter for probe in probes)


# The commands whose payloads the SDK stores under the run itself (StorageDriverStoreContext):
# an activity's, as for a payload of no command. Every other command is asked of the run.
_OWN_TARGET = frozenset({CommandType.COMMAND_TYPE_SCHEDULE_ACTIVITY_TASK})


if _SdkInstance is not None:

    class _CompiledInstance(_SdkInstance):
        def __init__(
            self,
            det: WorkflowInstanceDetails,
            runner_class: type[WorkflowRunner],
            restrictions: SandboxRestrictions,
            *,
            context_free: bool = False,
        ) -> None:
            super().__init__(det, runner_class, restrictions)
            info = det.info
            self._own_context = (
                WorkflowSerializationContext(namespace=info.namespace, workflow_id=info.workflow_id)
                if context_free
                else None
            )
            self._own_store = StorageDriverStoreContext(
                target=StorageDriverWorkflowInfo(
                    id=info.workflow_id, run_id=info.run_id, type=info.workflow_type, namespace=info.namespace
                )
            )

        def _run_code(self, code: Any, **extra_globals: Any) -> None:
            super()._run_code(_compiled(code) if isinstance(code, str) else code, **extra_globals)  # type: ignore[arg-type]

        def get_serialization_context(self, command_info: Any) -> SerializationContext | None:
            if self._own_context is not None:
                return self._own_context  # any answer gives the same converter
            return super().get_serialization_context(command_info)

        def get_external_store_context(self, command_info: Any) -> StorageDriverStoreContext:
            if command_info is None or command_info.command_type in _OWN_TARGET:
                return self._own_store  # what the run itself answers for these
            return super().get_external_store_context(command_info)


@dataclasses.dataclass(frozen=True)
class CompiledSandboxRunner(SandboxedWorkflowRunner):
    """`SandboxedWorkflowRunner` whose sandbox snippets are compiled once per process, and which
    steps into a run for a payload's serialization context only when the converter reads one."""

    context_free: bool = False

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _CompiledInstance(det, self.runner_class, self.restrictions, context_free=self.context_free)


def sandbox_runner(
    restrictions: SandboxRestrictions = SandboxRestrictions.default, converter: DataConverter | None = None
) -> SandboxedWorkflowRunner:
    """The sandbox with these restrictions: compiled snippets where the SDK allows, else the SDK's.
    `converter`: the worker's data converter (None: assume it reads serialization contexts)."""
    if hook_available():
        free = converter is not None and context_free(converter)
        return CompiledSandboxRunner(restrictions=restrictions, context_free=free)
    return SandboxedWorkflowRunner(restrictions=restrictions)
