"""Both provider protocols against the loopback model server, driven through the flow workflow:
what is retried (429 with Retry-After, 5xx, malformed replies) and what fails at once with a
clear message (context length, content filters, refusals, credentials, truncation)."""

from __future__ import annotations

import pytest

from ensemble.runs.view import describe_run
from tests.flowkit import run_to_end
from tests.llm_agents import SENTINEL_KEY, answer, llm_flow, llm_server, use_server  # noqa: F401

OPENAI, ANTHROPIC = "openai:test-model", "anthropic:test-model"


async def run(dev_server, task_queue, flow, text="ticket"):
    handle, outcome = await run_to_end(dev_server.client, task_queue, flow, {"text": text})
    return outcome, await describe_run(dev_server.client, handle.id)


@pytest.mark.parametrize("model", [OPENAI, ANTHROPIC])
@pytest.mark.parametrize(
    "first, kind",
    [
        (
            {
                "status": 429,
                "error": {"message": "slow down", "type": "rate_limit_error"},
                "headers": {"Retry-After": "2"},
            },
            "RateLimited",
        ),
        ({"status": 500, "error": {"message": "internal error", "type": "api_error"}}, "ServiceUnavailable"),
        ({"status": 200, "raw": '{"choices": [ truncated'}, "MalformedReply"),
        ({"status": 200, "raw": "<html>gateway</html>"}, "MalformedReply"),
    ],
    ids=["429", "500", "bad-json", "html"],
)
async def test_transient_failures_are_retried(dev_server, task_queue, llm_server, monkeypatch, model, first, kind):
    server = llm_server([first, answer("billing", 1)])
    use_server(monkeypatch, server)
    outcome, view = await run(dev_server, task_queue, llm_flow(model))
    assert outcome.output["support"] == {"label": "billing", "priority": 1}
    [step] = view.steps
    assert step.attempts == 2
    times = [r["t"] for r in server.requests()]
    if kind == "RateLimited":  # the retry waited as long as Retry-After said, not the 0.1 s backoff
        assert times[1] - times[0] >= 1.9


async def test_retry_after_ms_is_honoured(dev_server, task_queue, llm_server, monkeypatch):
    server = llm_server(
        [{"status": 429, "error": {"message": "slow"}, "headers": {"retry-after-ms": "1500"}}, answer()]
    )
    use_server(monkeypatch, server)
    outcome, _ = await run(dev_server, task_queue, llm_flow(OPENAI))
    assert outcome is not None
    first, second = [r["t"] for r in server.requests()]
    assert second - first >= 1.4


async def test_anthropic_overloaded_is_retried(dev_server, task_queue, llm_server, monkeypatch):
    server = llm_server([{"status": 529, "error": {"type": "overloaded_error", "message": "Overloaded"}}, answer()])
    use_server(monkeypatch, server)
    outcome, view = await run(dev_server, task_queue, llm_flow(ANTHROPIC))
    assert outcome is not None and view.steps[0].attempts == 2


@pytest.mark.parametrize(
    "model, reply, expected",
    [
        (
            OPENAI,
            {
                "status": 400,
                "error": {
                    "message": "This model's maximum context length is 8192 tokens",
                    "code": "context_length_exceeded",
                },
            },
            "the conversation is longer than the model's context window (HTTP 400)",
        ),
        (
            ANTHROPIC,
            {"status": 400, "error": {"message": "prompt is too long: 210000 tokens > 200000 maximum"}},
            "the conversation is longer than the model's context window (HTTP 400)",
        ),
        (
            OPENAI,
            {"status": 400, "error": {"message": "The response was filtered", "code": "content_filter"}},
            "the provider's content filter refused the request (HTTP 400)",
        ),
        (
            OPENAI,
            {"reply": {"text": "", "finish": "content_filter"}},
            "the model refused to answer: the provider's content filter stopped the reply",
        ),
        (
            OPENAI,
            {"reply": {"refusal": "I can't help with that."}},
            "the model refused to answer: I can't help with that.",
        ),
        (
            ANTHROPIC,
            {"reply": {"finish": "refusal", "text": "I won't do that."}},
            "the model refused to answer: I won't do that.",
        ),
        (
            OPENAI,
            {"status": 401, "error": {"message": "Incorrect API key"}},
            "openai refused the request (HTTP 401): check OPENAI_API_KEY",
        ),
        (
            ANTHROPIC,
            {"status": 403, "error": {"message": "forbidden"}},
            "anthropic refused the request (HTTP 403): check ANTHROPIC_API_KEY",
        ),
        (
            OPENAI,
            {"status": 404, "error": {"message": "The model `test-model` does not exist"}},
            "openai does not know model 'test-model'",
        ),
        (
            OPENAI,
            {"status": 400, "error": {"message": "temperature must be at most 2"}},
            "openai rejected the request (HTTP 400): temperature must be at most 2",
        ),
        (
            OPENAI,
            {"reply": {"text": '{"label": "bill', "finish": "length"}},
            "the reply was cut off at llm.max_tokens=2048; raise it",
        ),
    ],
    ids=[
        "context-openai",
        "context-anthropic",
        "filter-400",
        "filter-finish",
        "refusal-openai",
        "refusal-anthropic",
        "401",
        "403",
        "404",
        "400",
        "truncated",
    ],
)
async def test_permanent_failures_fail_at_once_with_a_clear_message(
    dev_server, task_queue, llm_server, monkeypatch, model, reply, expected
):
    server = llm_server([reply, answer()])
    use_server(monkeypatch, server)
    outcome, view = await run(dev_server, task_queue, llm_flow(model))
    assert outcome is None
    assert expected in view.error
    assert view.error.startswith("step 'support' (agent 'support') failed: agent 'support': ")
    assert view.steps[0].attempts == 1 and len(server.requests()) == 1


async def test_azure_and_ollama_speak_the_openai_protocol_with_their_own_settings(
    dev_server, task_queue, llm_server, monkeypatch
):
    server = llm_server([answer("billing", 1), answer("outage", 2)])
    use_server(monkeypatch, server)
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", server.url)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", SENTINEL_KEY)
    monkeypatch.setenv("OLLAMA_BASE_URL", server.openai_base)
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)
    azure, _ = await run(dev_server, task_queue, llm_flow("azure:my-deployment"))
    ollama, _ = await run(dev_server, task_queue, llm_flow("ollama:llama3.1"))
    assert azure.output["support"]["label"] == "billing" and ollama.output["support"]["label"] == "outage"
    to_azure, to_ollama = server.requests()
    assert to_azure["path"] == "/openai/deployments/my-deployment/chat/completions?api-version=2024-10-21"
    assert to_azure["headers"]["api-key"] == SENTINEL_KEY and "authorization" not in to_azure["headers"]
    assert to_azure["body"]["max_completion_tokens"] == 2048
    assert to_ollama["path"] == "/v1/chat/completions" and to_ollama["body"]["model"] == "llama3.1"
    assert "authorization" not in to_ollama["headers"] and to_ollama["body"]["max_tokens"] == 2048


async def test_the_worker_default_model_and_its_problems(dev_server, task_queue, llm_server, monkeypatch):
    server = llm_server([answer("other", 4)])
    use_server(monkeypatch, server)
    flow = llm_flow(OPENAI)
    del flow["agents"][0]["model"]
    outcome, view = await run(dev_server, task_queue, flow)
    assert (
        outcome is None
        and "agent 'support' has no model: set model: 'provider:model' on the agent, or ENSEMBLE_LLM" in view.error
    )
    monkeypatch.setenv("ENSEMBLE_LLM", "gpt-4o")
    outcome, view = await run(dev_server, task_queue, flow)
    assert outcome is None and "model 'gpt-4o' is not 'provider:model'" in view.error
    monkeypatch.setenv("ENSEMBLE_LLM", "openai:from-env")
    outcome, view = await run(dev_server, task_queue, flow)
    assert outcome.output["support"]["priority"] == 4 and view.steps[0].model == "openai:from-env"
    assert [r["body"]["model"] for r in server.requests()] == ["from-env"]


async def test_the_vendors_own_service_needs_its_key(dev_server, task_queue, monkeypatch):
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "ENSEMBLE_LLM"):
        monkeypatch.delenv(name, raising=False)
    outcome, view = await run(dev_server, task_queue, llm_flow(ANTHROPIC))
    assert outcome is None
    assert (
        "agent 'support': the worker's environment has no ANTHROPIC_API_KEY (needed for anthropic:test-model)"
        in view.error
    )
    assert view.steps[0].attempts == 1
