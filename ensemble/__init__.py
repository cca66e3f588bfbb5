"""Ensemble: durable orchestration of AI agents as Temporal workflows."""

from ensemble.agents import agent, get_agent, register_agent
from ensemble.spec import AgentContext, AgentSpec, FlowSpec, RetrySpec

__all__ = ["agent", "get_agent", "register_agent", "AgentContext", "AgentSpec", "FlowSpec", "RetrySpec"]
