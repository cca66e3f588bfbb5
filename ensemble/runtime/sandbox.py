"""The workflow sandbox Ensemble's workers run in: Temporal's own, minus a repeated compile.

Temporal's sandbox steps into a run by `exec`-ing a short snippet of source (import the workflow,
activate it, ask it for a payload's serialization context), and it compiles that snippet again on
every call: several times per workflow task, once per payload. In a profile of a worker running
short runs that compiling was about a fifth of the worker's CPU. `CompiledSandboxRunner` hands the same snippets to the same sandbox as
code objects compiled once per process; what runs inside, and every restriction, is unchanged.

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

from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails
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


if _SdkInstance is not None:

    class _CompiledInstance(_SdkInstance):
        def _run_code(self, code: Any, **extra_globals: Any) -> None:
            super()._run_code(_compiled(code) if isinstance(code, str) else code, **extra_globals)  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class CompiledSandboxRunner(SandboxedWorkflowRunner):
    """`SandboxedWorkflowRunner` whose sandbox snippets are compiled once per process."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _CompiledInstance(det, self.runner_class, self.restrictions)


def sandbox_runner(restrictions: SandboxRestrictions = SandboxRestrictions.default) -> SandboxedWorkflowRunner:
    """The sandbox with these restrictions: compiled snippets where the SDK allows, else the SDK's."""
    if hook_available():
        return CompiledSandboxRunner(restrictions=restrictions)
    return SandboxedWorkflowRunner(restrictions=restrictions)
