"""Benchmarks of Ensemble against plain Temporal and LangGraph: `python -m bench [--quick]`.

See BENCHMARKS.md for the latest figures and how to reproduce them, and docs/performance.md for
the settings they led to."""
