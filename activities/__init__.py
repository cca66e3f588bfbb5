"""Every side effect of Ensemble: agent execution by kind (`executors`; the function, http and llm
executors register when `executors.load()` first runs), error classification."""
