"""Egress control: each address class an agent might be pointed at, refused or allowed as
docs/security.md (Egress) says, and a refusal as a run sees it."""

from __future__ import annotations

import pytest
from temporalio.exceptions import ApplicationError

from ensemble.activities import egress
from ensemble.runs.view import describe_run
from tests.flowkit import run_to_end


@pytest.fixture
def policy(monkeypatch):
    monkeypatch.setenv("ENSEMBLE_EGRESS_ALLOW", "127.0.0.1:8080,localhost:5000,[::1]:9090")
    for var in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "OLLAMA_BASE_URL", "AZURE_OPENAI_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(egress, "_protected", {("127.0.0.1", 7233), ("0.0.0.0", 9464)})


async def refused(url: str) -> str:
    with pytest.raises(ApplicationError) as err:
        await egress.check_url(url, "agent 'a'")
    assert err.value.non_retryable and err.value.type == "EgressRefused"
    return err.value.message


@pytest.mark.parametrize(
    "url, why",
    [
        ("http://169.254.169.254/latest/meta-data/", "is a cloud metadata service"),
        ("http://169.254.10.1:8080/", "is a link-local address"),
        ("http://[fe80::1]:8080/", "is a link-local address"),
        ("http://[fd00:ec2::254]/", "is a cloud metadata service"),
        ("http://metadata.google.internal/computeMetadata/v1/", "is a cloud metadata service"),
        ("http://0.0.0.0:8080/", "is not a host address"),
        ("http://127.0.0.1:7233/", "is a port of the Temporal server or of this worker"),
        ("http://localhost:7233/", "is a port of the Temporal server or of this worker"),
        ("http://[::ffff:127.0.0.1]:7233/", "is a port of the Temporal server or of this worker"),
        ("http://127.0.0.1:9464/metrics", "is a port of the Temporal server or of this worker"),
        ("http://127.0.0.1:8081/", "is not on this worker's egress allow-list"),
        ("http://0x7f000001/", "is not on this worker's egress allow-list"),
        ("http://2130706433:81/", "is not on this worker's egress allow-list"),
        ("http://[::1]:8080/", "is not on this worker's egress allow-list"),
        ("http://10.0.0.8/", "is not on this worker's egress allow-list"),
        ("http://192.168.1.1:8080/", "is not on this worker's egress allow-list"),
        ("file:///etc/passwd", "only http and https URLs"),
    ],
)
async def test_refused_address_classes(policy, url, why):
    message = await refused(url)
    assert why in message
    assert message.startswith(f"agent 'a': egress to {url.split('?')[0]} refused")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/x",
        "http://0x7f000001:8080/x",
        "http://2130706433:8080/",
        "http://127.1:8080/",
        "http://[::1]:9090/",
        "http://localhost:5000/",
    ],
)
async def test_listed_hosts_are_allowed_in_any_spelling(policy, url):
    await egress.check_url(url, "agent 'a'")


async def test_configured_providers_are_allowed_and_special_addresses_need_an_exact_entry(policy, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:5555/v1")
    await egress.check_url("http://127.0.0.1:5555/v1/chat/completions", "agent 'a'")
    await egress.check_url("http://127.0.0.1:11434/v1/chat/completions", "agent 'a'")  # ollama's default
    monkeypatch.setenv("ENSEMBLE_EGRESS_ALLOW", "127.0.0.1")  # any port of a listed host, but not Temporal's
    assert "port of the Temporal server" in await refused("http://127.0.0.1:7233/")
    monkeypatch.setenv("ENSEMBLE_EGRESS_ALLOW", "127.0.0.1,127.0.0.1:7233,169.254.169.254:80")
    await egress.check_url("http://127.0.0.1:7233/", "agent 'a'")
    await egress.check_url("http://169.254.169.254/latest", "agent 'a'")


async def test_an_http_agent_pointed_at_the_metadata_service_fails_once_with_a_clear_error(dev_server, task_queue):
    flow = {
        "name": "exfil",
        "agents": [
            {
                "name": "grab",
                "kind": "http",
                "url": "http://169.254.169.254/latest/meta-data/iam",
                "retry": {"initial_interval_s": 0.1, "max_attempts": 5},
            }
        ],
        "steps": [{"agent": "grab", "input": {}}],
    }
    handle, outcome = await run_to_end(dev_server.client, task_queue, flow, {})
    assert outcome is None
    view = await describe_run(dev_server.client, handle.id)
    assert (
        "egress to http://169.254.169.254/latest/meta-data/iam refused: 169.254.169.254 (169.254.169.254) is a cloud metadata service"
        in view.error
    )
    history = await handle.fetch_history()
    attempts = [e for e in history.events if e.HasField("activity_task_started_event_attributes")]
    assert [e.activity_task_started_event_attributes.attempt for e in attempts] == [1]  # non-retryable


@pytest.mark.parametrize("target", ["frontend", "web UI"])
async def test_an_http_agent_pointed_at_the_temporal_server_is_refused(dev_server, task_queue, target):
    url = (
        f"http://{dev_server.info.address}/api/v1/namespaces"
        if target == "frontend"
        else f"{dev_server.info.ui_url}/api/v1/namespaces"
    )
    flow = {
        "name": "pivot",
        "agents": [{"name": "poke", "kind": "http", "url": url}],
        "steps": [{"agent": "poke", "input": {}}],
    }
    handle, outcome = await run_to_end(dev_server.client, task_queue, flow, {})
    assert outcome is None
    assert (
        "is a port of the Temporal server or of this worker" in (await describe_run(dev_server.client, handle.id)).error
    )
