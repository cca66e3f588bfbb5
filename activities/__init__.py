"""Every side effect of Ensemble: agent execution by kind, error classification."""

from ensemble.activities import function, http, llm  # noqa: F401  (register the executors)
from ensemble.activities.executors import EXECUTORS, run_agent

__all__ = ["EXECUTORS", "run_agent"]
