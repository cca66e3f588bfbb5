"""Defining agents in Python: the `@agent` decorator and the process-wide agent registry.

    from ensemble import agent

    @agent(description="Pulls fields out of a document", timeout_s=30)
    def extractor(doc: Document) -> Extraction:
        ...

The decorated function stays a plain callable (unit-test it directly). Its spec records the
handler's import path, which is how a run names it; a worker runs it only when the worker itself
imported the module (see `deploy_handler` and docs/security.md, "Only deployed code runs").
"""

from __future__ import annotations

import importlib
import inspect
import sys
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from ensemble.spec import AgentSpec, Effect, RetrySpec

F = TypeVar("F", bound=Callable[..., Any])

_AGENTS: dict[str, AgentSpec] = {}
# Only deployed code runs: every callable (agent handler, tool, model) this process may be asked
# to run, by its "module:attr" path, and the handlers each deployed agent name may have. Filled by
# `@agent`/`@tool` in modules this process imported and by flows it loaded itself, never by a run.
_DEPLOYED: dict[str, Any] = {}
_AGENT_HANDLERS: dict[str, set[str]] = {}
# Modules deployed to this process (they registered agents or tools, or a loaded flow imports them):
# a run may name a pydantic model defined in one of them (an output model), never other code.
_DEPLOYED_MODULES: set[str] = set()


class NotDeployed(ImportError):
    """A run named code this process was not deployed with: nothing was imported."""


def register_agent(spec: AgentSpec) -> AgentSpec:
    """Add an agent spec to this process's registry (a later spec of the same name replaces it)."""
    _AGENTS[spec.name] = spec
    if spec.kind == "function" and spec.handler:
        _AGENT_HANDLERS.setdefault(spec.name, set()).add(spec.handler)
    return spec


def deploy(path: str, obj: Any) -> None:
    """Record `obj` as the deployed callable (or model) named `path`."""
    _DEPLOYED[path] = obj
    _DEPLOYED_MODULES.add(path.partition(":")[0])


def deploy_module(name: str) -> None:
    """A module this process imported on purpose (a flow's `imports`, ENSEMBLE_FLOWS)."""
    _DEPLOYED_MODULES.add(name)


def deploy_agent(spec: AgentSpec) -> None:
    """A function agent of a flow this process loaded itself (a bundled flow, a flow file the
    worker was started with, the file the CLI runs): import its handler and allow it by name."""
    if spec.kind == "function" and spec.handler:
        deploy_handler(spec.handler)
        _AGENT_HANDLERS.setdefault(spec.name, set()).add(spec.handler)


def deploy_handler(path: str) -> Any:
    """Import "package.module:attr.attr" ON PURPOSE (a flow this process was deployed with names
    it) and allow runs to name it. Never call this with a path that came from a run."""
    if path in _DEPLOYED:
        return _DEPLOYED[path]
    module_name, _, attr = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{path} is not callable")
    deploy(path, obj)
    return obj


def is_deployed(path: str) -> bool:
    return path in _DEPLOYED


def check_agent(spec: AgentSpec) -> None:
    """Refuse a function agent whose handler this process was not deployed with, or whose name is
    deployed with another handler (a run cannot rename `os:system` into a known agent)."""
    handler = spec.handler or ""
    if handler not in _DEPLOYED:
        raise NotDeployed(
            f"handler {handler!r} is not deployed to this worker (nothing was imported): start the worker with the flow "
            "or module that defines it (`worker.py --flows PATH_OR_MODULE` or ENSEMBLE_FLOWS)"
        )
    known = _AGENT_HANDLERS.get(spec.name)
    if known is not None and handler not in known:
        raise NotDeployed(
            f"agent '{spec.name}' is deployed to this worker with handler {', '.join(sorted(known))}, not {handler!r}"
        )


def get_agent(name: str) -> AgentSpec | None:
    return _AGENTS.get(name)


def registered_agents() -> dict[str, AgentSpec]:
    return dict(_AGENTS)


def _schema_of(annotation: Any) -> dict[str, Any] | None:
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation.model_json_schema()
    return None


def agent(
    name: str | None = None,
    *,
    description: str = "",
    role: str = "",
    timeout_s: float = 60.0,
    heartbeat_s: float | None = None,
    retry: RetrySpec | None = None,
    effect: Effect = "read",
    task_queue: str | None = None,
    tools: list[str] | None = None,
    fast: bool = False,
) -> Callable[[F], F]:
    """Register a Python callable as a `function` agent (sync or async).

    The callable takes the step input (a pydantic model parameter is validated from it) and
    optionally a second parameter annotated `AgentContext`. It returns JSON-able data or a model.
    `fast=True` runs it as a local activity on the run's own worker (docs/performance.md).
    """

    def decorate(fn: F) -> F:
        hints = typing.get_type_hints(fn)
        params = list(inspect.signature(fn).parameters.values())
        input_schema = _schema_of(hints.get(params[0].name)) if params else None
        handler = f"{fn.__module__}:{fn.__qualname__}"
        spec = AgentSpec(
            name=name or fn.__name__,
            description=description or (inspect.getdoc(fn) or "").split("\n\n")[0],
            role=role,
            kind="function",
            handler=handler,
            input_schema=input_schema,
            output_schema=_schema_of(hints.get("return")),
            timeout_s=timeout_s,
            heartbeat_s=heartbeat_s,
            retry=retry or RetrySpec(),
            effect=effect,
            task_queue=task_queue,
            tools=list(tools or []),
            fast=fast,
        )
        register_agent(spec)
        deploy(handler, fn)
        fn.__ensemble_agent__ = spec  # type: ignore[attr-defined]
        return fn

    return decorate


def load_handler(path: str) -> Callable[..., Any]:
    """The deployed callable (or model) named "package.module:attr": only what this process
    registered or loaded itself; a path from anywhere else raises NotDeployed, importing nothing."""
    if path in _DEPLOYED:
        return _DEPLOYED[path]
    model = _deployed_model(path)
    if model is not None:
        return model
    raise NotDeployed(
        f"{path!r} is not deployed to this worker (nothing was imported): start the worker with the flow or "
        "module that defines it (`worker.py --flows PATH_OR_MODULE` or ENSEMBLE_FLOWS)"
    )


def _deployed_model(path: str) -> Any:
    """A pydantic model class defined in a deployed module that is already imported, else None."""
    module_name, _, attr = path.partition(":")
    module = sys.modules.get(module_name)
    if module_name not in _DEPLOYED_MODULES or module is None:
        return None
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    if inspect.isclass(obj) and issubclass(obj, BaseModel) and obj.__module__ == module_name:
        return obj
    return None
