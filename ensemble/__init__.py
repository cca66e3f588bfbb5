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
    "tool": "ensemble.authoring.tools",
    "ToolContext": "ensemble.authoring.tools",
    "ToolError": "ensemble.authoring.tools",
    "register_flow": "ensemble.authoring.flows",
    "load_flow_file": "ensemble.authoring.flows",
    "AgentContext": "ensemble.spec",
    "AgentSpec": "ensemble.spec",
    "FlowSpec": "ensemble.spec",
    "RetrySpec": "ensemble.spec",
    "GateDecision": "ensemble.spec",
    "GateDecisionResult": "ensemble.spec",
    "RunStatusView": "ensemble.spec",
    "StepRecord": "ensemble.spec",
    "Usage": "ensemble.spec",
    "EnsembleError": "ensemble.spec.errors",
    "InputError": "ensemble.spec.errors",
    "EnsembleClient": "ensemble.client",
    "FlowInfo": "ensemble.client",
    "RunOutcome": "ensemble.client",
    "RunConflict": "ensemble.client",
    "StartedRun": "ensemble.client",
}

__all__ = [
    "AgentContext",
    "AgentSpec",
    "EnsembleClient",
    "EnsembleError",
    "FlowInfo",
    "FlowSpec",
    "GateDecision",
    "GateDecisionResult",
    "InputError",
    "RetrySpec",
    "RunConflict",
    "RunOutcome",
    "RunStatusView",
    "StartedRun",
    "StepRecord",
    "ToolContext",
    "ToolError",
    "Usage",
    "agent",
    "get_agent",
    "load_flow_file",
    "register_agent",
    "register_flow",
    "tool",
]

if TYPE_CHECKING:
    from ensemble.authoring.agents import agent, get_agent, register_agent
    from ensemble.authoring.flows import load_flow_file, register_flow
    from ensemble.authoring.tools import ToolContext, ToolError, tool
    from ensemble.client import EnsembleClient, FlowInfo, RunConflict, RunOutcome, StartedRun
    from ensemble.spec import (
        AgentContext,
        AgentSpec,
        FlowSpec,
        GateDecision,
        GateDecisionResult,
        RetrySpec,
        RunStatusView,
        StepRecord,
        Usage,
    )
    from ensemble.spec.errors import EnsembleError, InputError


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'ensemble' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
