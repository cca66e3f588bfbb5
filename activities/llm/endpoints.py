"""Where a model is and how to reach it: a model is named `provider:model`. `openai` is any
OpenAI-compatible server, chosen by OPENAI_BASE_URL (OpenAI, vLLM, LM Studio, llama.cpp
server...); `ollama` and `azure` are the same protocol with their own defaults; `anthropic` speaks
the messages API. Keys and base URLs come from the worker's environment only."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import overload

from ensemble.activities.errors import permanent
from ensemble.spec import LLM_PROVIDERS

ANTHROPIC_VERSION = "2023-06-01"


@dataclass
class Endpoint:
    """Where and how to call one model. `headers` hold the key: never log or print them."""

    provider: str
    model: str
    wire: str  # "openai" or "anthropic"
    url: str
    headers: dict[str, str] = field(repr=False)
    key_env: str | None = None
    official: bool = False  # the vendor's own service (not a local or compatible server)
    key: str | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"{self.provider}:{self.model}"

    def secrets(self) -> list[str]:
        """What must never appear in a message: the key, and every credential-like env value."""
        return [self.key] if self.key else []  # with every value the worker holds (scrub.secret_values)


@overload
def _env(name: str) -> str | None: ...
@overload
def _env(name: str, default: str) -> str: ...
def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or default


def endpoint(model_ref: str, who: str) -> Endpoint:
    """The endpoint of 'provider:model' from this worker's environment."""
    provider, _, model = model_ref.partition(":")
    if provider not in LLM_PROVIDERS or not model:
        raise permanent(
            f"{who}: model '{model_ref}' is not 'provider:model' with provider one of {', '.join(LLM_PROVIDERS)}",
            kind="BadModel",
        )

    def key(name: str, required: bool) -> str | None:
        value = _env(name)
        if value is None and required:
            raise permanent(
                f"{who}: the worker's environment has no {name} (needed for {model_ref})", kind="MissingSecret"
            )
        return value

    if provider == "anthropic":
        base = _env("ANTHROPIC_BASE_URL", "https://api.anthropic.com").rstrip("/")
        official = base == "https://api.anthropic.com"
        api_key = key("ANTHROPIC_API_KEY", official)
        headers = {"anthropic-version": ANTHROPIC_VERSION, **({"x-api-key": api_key} if api_key else {})}
        return Endpoint(
            provider, model, "anthropic", f"{base}/v1/messages", headers, "ANTHROPIC_API_KEY", official, api_key
        )
    if provider == "azure":
        azure = _env("AZURE_OPENAI_ENDPOINT")
        if azure is None:
            raise permanent(
                f"{who}: the worker's environment has no AZURE_OPENAI_ENDPOINT (needed for {model_ref})",
                kind="MissingSecret",
            )
        version = _env("AZURE_OPENAI_API_VERSION", "2024-10-21")
        api_key = key("AZURE_OPENAI_API_KEY", True)
        url = f"{azure.rstrip('/')}/openai/deployments/{model}/chat/completions?api-version={version}"
        return Endpoint(
            provider, model, "openai", url, {"api-key": api_key or ""}, "AZURE_OPENAI_API_KEY", True, api_key
        )
    if provider == "ollama":
        base = _env("OLLAMA_BASE_URL", "http://127.0.0.1:11434/v1").rstrip("/")
        api_key = key("OLLAMA_API_KEY", False)
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        return Endpoint(
            provider, model, "openai", f"{base}/chat/completions", headers, "OLLAMA_API_KEY", False, api_key
        )
    base = _env("OPENAI_BASE_URL", "https://api.openai.com/v1").rstrip("/")
    official = base == "https://api.openai.com/v1"
    api_key = key("OPENAI_API_KEY", official)
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    return Endpoint(provider, model, "openai", f"{base}/chat/completions", headers, "OPENAI_API_KEY", official, api_key)
