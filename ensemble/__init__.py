"""Ensemble: durable orchestration of AI agents as Temporal workflows.

The public API is imported lazily (PEP 562), so importing `ensemble` costs nothing: workflow
modules live under this package and the workflow sandbox imports its parent for every run.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> module that defines it
_API: dict[str, str] = {
    "agent": "ensemble.authoring.agents",
    "get_agent": "ensemble.authoring.agents",
    "register_agent": "ensemble.authoring.agents",
    "AgentContext": "ensemble.spec",
    "AgentSpec": "ensemble.spec",
    "FlowSpec": "ensemble.spec",
    "RetrySpec": "ensemble.spec",
}

__all__ = sorted(_API)

if TYPE_CHECKING:
    from ensemble.authoring.agents import agent, get_agent, register_agent
    from ensemble.spec import AgentContext, AgentSpec, FlowSpec, RetrySpec


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'ensemble' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
