"""Agent specs: what an agent is (its kind, handler or endpoint or model, schemas, timeouts, retry
policy, effect and task queue). Re-exported by ensemble.spec."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ensemble.spec.base import NAME_RE, Effect, _Strict
from ensemble.spec.llm import LLM_PROVIDERS, MODEL_RE, LlmSpec, ToolSpec

# The executor kinds this release runs. A new kind adds its name here and registers an executor
# in `activities.executors`; nothing else in the engine changes.
AgentKind = Literal["function", "http", "llm"]


class RetrySpec(_Strict):
    """How Temporal retries an agent. Bounded by default: a run never retries forever."""

    initial_interval_s: float = Field(1.0, gt=0)
    backoff_coefficient: float = Field(2.0, ge=1)
    max_interval_s: float = Field(30.0, gt=0)
    max_attempts: int = Field(3, ge=1, le=100)
    non_retryable_errors: list[str] = Field(default_factory=list)


class AgentSpec(_Strict):
    """A named unit of work, run as a Temporal activity whose type is the agent's name."""

    name: str = Field(pattern=NAME_RE)
    description: str = ""
    role: str = ""
    kind: AgentKind = "function"
    # kind=function: "package.module:callable"
    handler: str | None = None
    # kind=http: the service to POST the step's input to. Header values may use ${env:NAME},
    # resolved on the worker, so credentials never enter a run's history.
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    timeout_s: float = Field(60.0, gt=0, description="start-to-close timeout of one attempt")
    schedule_to_close_s: float | None = Field(None, gt=0)
    heartbeat_s: float | None = Field(None, gt=0)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    tools: list[str] = Field(default_factory=list, description="the tools this agent may call (llm agents)")
    effect: Effect = "read"
    task_queue: str | None = Field(None, description="run on workers of this queue (default: the flow's)")
    # kind=llm: "provider:model" (default: the worker's ENSEMBLE_LLM). `llm` holds the prompt and
    # limits; on a function agent it is the model-backed version the worker runs when it has
    # ENSEMBLE_LLM set. `tool_specs` are the declarations of `tools`, filled in by the flow loader.
    model: str | None = Field(None, description="kind=llm: 'provider:model', e.g. openai:gpt-4o-mini")
    llm: LlmSpec | None = None
    tool_specs: list[ToolSpec] = Field(default_factory=list)
    fast: bool = Field(
        False,
        description="a short agent (well under its timeout): run it as a Temporal local activity on the "
        "worker of the run (see docs/performance.md for the trade-offs)",
    )

    @model_validator(mode="after")
    def _fast_fields(self) -> AgentSpec:
        # A local activity runs on the worker that runs the workflow and cannot heartbeat.
        if self.fast and self.task_queue:
            raise ValueError("a fast agent runs on the run's own worker: remove task_queue or fast")
        if self.fast and self.heartbeat_s:
            raise ValueError("a fast agent cannot heartbeat: remove heartbeat_s or fast")
        return self

    @model_validator(mode="after")
    def _kind_fields(self) -> AgentSpec:
        if self.kind == "function":
            if not self.handler or not re.match(r"^[\w.]+:[\w.]+$", self.handler):
                raise ValueError("a function agent needs handler: 'package.module:callable'")
        elif self.kind == "http":
            if not self.url or not re.match(r"^https?://", self.url):
                raise ValueError("an http agent needs url: 'http(s)://...'")
            if self.llm is not None:
                raise ValueError("llm: is for llm agents and function agents, not http agents")
        elif self.kind == "llm":
            if self.handler or self.url:
                raise ValueError(
                    "an llm agent has model: 'provider:model' and llm: {instructions, prompt...}, not handler or url"
                )
            self.llm = self.llm or LlmSpec()
            if "timeout_s" not in self.model_fields_set:
                self.timeout_s = 300.0  # a tool loop of several model calls
            if self.heartbeat_s is None and not self.fast:
                self.heartbeat_s = 20.0  # the transcript is heartbeated: a retry resumes from it
        if self.model is not None and self.kind != "llm":
            raise ValueError("model: is for llm agents (a function agent's llm: runs on the worker's ENSEMBLE_LLM)")
        return self

    @field_validator("model")
    @classmethod
    def _model_string(cls, model: str | None) -> str | None:
        if model is not None:
            if not re.match(MODEL_RE, model):
                raise ValueError(f"model '{model}' is not 'provider:model' (e.g. openai:gpt-4o-mini)")
            if model.split(":", 1)[0] not in LLM_PROVIDERS:
                raise ValueError(f"model '{model}': the provider is one of {', '.join(LLM_PROVIDERS)}")
        return model
