"""Defining agents in Python: the `@agent` decorator and the process-wide agent registry.

    from ensemble import agent

    @agent(description="Pulls fields out of a document", timeout_s=30)
    def extractor(doc: Document) -> Extraction:
        ...

The decorated function stays a plain callable (unit-test it directly). Its spec records the
handler's import path, so a worker that never imported the module can still run it.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from typing import Any, Callable, TypeVar

from pydantic import BaseModel

from ensemble.spec import AgentSpec, Effect, RetrySpec

F = TypeVar("F", bound=Callable[..., Any])

_AGENTS: dict[str, AgentSpec] = {}


def register_agent(spec: AgentSpec) -> AgentSpec:
    """Add an agent spec to this process's registry (a later spec of the same name replaces it)."""
    _AGENTS[spec.name] = spec
    return spec


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
        spec = AgentSpec(
            name=name or fn.__name__,
            description=description or (inspect.getdoc(fn) or "").split("\n\n")[0],
            role=role,
            kind="function",
            handler=f"{fn.__module__}:{fn.__qualname__}",
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
        fn.__ensemble_agent__ = spec  # type: ignore[attr-defined]
        return fn

    return decorate


def load_handler(path: str) -> Callable[..., Any]:
    """Import "package.module:attr.attr" and return the callable (undecorated functions work too)."""
    module_name, _, attr = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"{path} is not callable")
    return obj
