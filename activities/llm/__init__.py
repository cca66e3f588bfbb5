"""Model-backed agents over httpx: providers, the tool loop, tools (docs/llm.md)."""

from ensemble.activities.llm import agent  # noqa: F401  (registers the `llm` executor)
