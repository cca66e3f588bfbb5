"""Deterministic orchestration only: the flow interpreter and one module per pattern."""
