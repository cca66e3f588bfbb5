"""llm agents calling tools of real MCP servers (tests/mcp_server.py, written with the `mcp` SDK) over
stdio and streamable HTTP, driven by the loopback model server, on the dev server: a round trip,
allow-list refusals, idempotency keys in `_meta`, servers killed and restarted, and a tool that
disappeared."""

from __future__ import annotations

import json

import pytest
from temporalio.client import WorkflowFailureError

from ensemble.runs.view import describe_run
from tests.flowkit import run_to_end
from tests.llm_agents import calls, llm_server, use_server  # noqa: F401
from tests.mcp_kit import free_port, http_server, ledger, mcp_flow, start_http, stdio_server, text

MODEL = "openai:test-model"
TOOLS = [
    {"name": "add", "kind": "mcp", "server": "calc"},
    {"name": "pay", "kind": "mcp", "server": "calc", "effect": "irreversible"},
]


def tool_messages(request: dict) -> list[str]:
    return [m["content"] for m in request["body"]["messages"] if m["role"] == "tool"]


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_mcp_tool_round_trip_with_idempotency_key(
    dev_server, task_queue, llm_server, monkeypatch, tmp_path, transport
):
    book = tmp_path / "ledger.jsonl"
    proc = None
    if transport == "stdio":
        server = stdio_server("calc", book)
    else:
        port = free_port()
        proc = start_http(book, port)
        server = http_server("calc", port)
    try:
        model = llm_server([calls(("add", {"a": 2, "b": 40}), ("pay", {"to": "bob", "amount": 5})), text("done: 42")])
        use_server(monkeypatch, model)
        handle, outcome = await run_to_end(
            dev_server.client, task_queue, mcp_flow(MODEL, [server], TOOLS, ["add", "pay"]), {"text": "sum"}
        )
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    assert outcome is not None and outcome.output == {"clerk": "done: 42"}
    first, second = model.requests()
    offered = {t["function"]["name"]: t["function"] for t in first["body"]["tools"]}
    assert offered["add"]["description"] == "Adds two integers"  # from the server's listing
    assert offered["add"]["parameters"]["required"] == ["a", "b"]
    results = tool_messages(second)
    assert json.loads(results[0]) == {"sum": 42}
    assert json.loads(results[1])["paid"] == 5
    add, pay = ledger(book)
    assert add["key"] is None  # read tools get no key
    assert pay["key"] and pay["key"].startswith(handle.id) and pay["status"] == "paid"
    if transport == "stdio":  # the worker has stopped: the stdio server it started has ended with it
        assert await processes_naming(str(book)) == []


async def processes_naming(text: str, wait_s: float = 10.0) -> list[int]:
    """Pids of live processes whose command line holds `text`, once none are left or `wait_s` passed."""
    import asyncio
    import os
    from pathlib import Path

    def alive() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if text.encode() in (entry / "cmdline").read_bytes():
                        found.append(int(entry.name))
                except OSError:
                    pass
        return found

    deadline = asyncio.get_running_loop().time() + wait_s
    while (pids := alive()) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
    return pids


async def test_a_tool_not_on_the_agents_list_is_refused_and_recorded(
    dev_server, task_queue, llm_server, monkeypatch, tmp_path
):
    book = tmp_path / "ledger.jsonl"
    model = llm_server([calls(("pay", {"to": "eve", "amount": 1000})), text("ok")])
    use_server(monkeypatch, model)
    flow = mcp_flow(MODEL, [stdio_server("calc", book)], TOOLS, ["add"])
    handle, outcome = await run_to_end(dev_server.client, task_queue, flow, {"text": "pay eve"})
    assert outcome is not None
    assert tool_messages(model.requests()[1]) == ["refused: agent 'clerk' may not call tool 'pay' (its tools: add)"]
    assert ledger(book) == []  # the server never saw the call
    [step] = (await describe_run(dev_server.client, handle.id)).steps
    assert [(r.tool, r.turn) for r in step.refusals] == [("pay", 1)]


async def test_a_tool_the_server_no_longer_offers_fails_the_step_naming_server_and_tool(
    dev_server, task_queue, llm_server, monkeypatch, tmp_path
):
    book = tmp_path / "ledger.jsonl"
    model = llm_server([calls(("add", {"a": 1, "b": 1})), text("ok")])
    use_server(monkeypatch, model)
    flow = mcp_flow(
        MODEL,
        [stdio_server("gone", book, "--without", "add")],
        [{"name": "add", "kind": "mcp", "server": "gone"}],
        ["add"],
    )
    handle, outcome = await run_to_end(dev_server.client, task_queue, flow, {"text": "add"})
    assert outcome is None
    view = await describe_run(dev_server.client, handle.id)
    assert "MCP server 'gone' does not offer tool 'add'" in (view.error or "")
    assert model.requests() == []  # failed before paying the model, and not retried


async def _until(predicate, timeout: float = 60.0) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


@pytest.mark.chaos
@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_mcp_server_killed_mid_call_and_restarted_the_run_goes_on(
    dev_server, task_queue, llm_server, monkeypatch, tmp_path, transport
):
    import asyncio
    import os
    import signal

    from tests.conftest import running_worker
    from tests.flowkit import request, start

    book, gate = tmp_path / "ledger.jsonl", tmp_path / "go"
    port = free_port()
    proc = start_http(book, port) if transport == "http" else None
    server = http_server("calc", port) if proc else stdio_server("calc", book)
    tools = [*TOOLS, {"name": "slow", "kind": "mcp", "server": "calc", "timeout_s": 60}]
    model = llm_server([calls(("slow", {"gate": str(gate)})), calls(("add", {"a": 1, "b": 2})), text("done")])
    use_server(monkeypatch, model)
    try:
        async with running_worker(dev_server.client, task_queue):
            handle = await start(
                dev_server.client, request(mcp_flow(MODEL, [server], tools, ["slow", "add"]), {"text": "x"}, task_queue)
            )
            await _until(lambda: any(e["tool"] == "slow" for e in ledger(book)))
            first_pid = ledger(book)[0]["pid"]
            os.kill(first_pid, signal.SIGKILL)  # the server dies with the call in flight
            gate.write_text("open")
            if proc is not None:
                proc.wait(10)
                proc = start_http(book, port)  # restarted on the same address
            outcome = await asyncio.wait_for(handle.result(), 120)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    assert outcome.output == {"clerk": "done"}
    entries = ledger(book)
    done = [e for e in entries if e["tool"] == "slow" and e["status"] == "done"]
    assert len(done) == 1 and done[0]["pid"] != first_pid  # the call ran to the end on the restarted server
    assert [e["arguments"] for e in entries if e["tool"] == "add"] == [{"a": 1, "b": 2}]


async def test_a_run_naming_an_mcp_server_the_worker_was_not_deployed_with_starts_nothing(
    dev_server, task_queue, llm_server, monkeypatch, tmp_path
):
    from ensemble.authoring import tools as registry

    marker = tmp_path / "pwned"
    evil = {"name": "evil", "command": ["sh", "-c", f"touch {marker}"]}
    model = llm_server([calls(("add", {"a": 1, "b": 1})), text("ok")])
    use_server(monkeypatch, model)
    flow = mcp_flow(
        MODEL, [evil], [{"name": "add", "kind": "mcp", "server": "evil", "input_schema": {"type": "object"}}], ["add"]
    )
    from tests.conftest import running_worker
    from tests.flowkit import request, start

    req = request(flow, {"text": "x"}, task_queue)  # validating the flow here deploys it to this process...
    registry._MCP_SERVERS.pop("evil")  # ...so take it back: the worker was not started with this flow file
    async with running_worker(dev_server.client, task_queue):
        handle = await start(dev_server.client, req)
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    view = await describe_run(dev_server.client, handle.id)
    assert "MCP server 'evil' is not deployed to this worker" in (view.error or "")
    assert not marker.exists()


def test_a_flow_naming_an_undeclared_mcp_server_gets_one_line(tmp_path):
    from tests.conftest import run_cli

    path = tmp_path / "flow.yaml"
    path.write_text(
        "name: bad_mcp\nmcp_servers:\n  - {name: calc, command: [python, s.py]}\n"
        "tools:\n  - {name: add, kind: mcp, server: calx}\n"
        "agents:\n  - {name: a, kind: llm, model: 'openai:x', tools: [add]}\nsteps:\n  - agent: a\n"
    )
    result = run_cli(["validate", str(path)], env=None)
    assert result.returncode == 2
    assert "tools[0].server: tool 'add' names MCP server 'calx', which is not under mcp_servers" in result.stderr


async def test_http_headers_come_from_the_env_allow_list_and_never_reach_the_history(
    dev_server, task_queue, llm_server, monkeypatch, tmp_path
):
    token = "mcp-token-sentinel-7f3a9c"
    port = free_port()
    proc = start_http(tmp_path / "ledger.jsonl", port, env={"MCP_EXPECTED_TOKEN": token})
    server = {**http_server("calc", port), "headers": {"X-Token": "${env:MCP_TOKEN}"}}
    flow = mcp_flow(MODEL, [server], [{"name": "whoami", "kind": "mcp", "server": "calc"}], ["whoami"])
    monkeypatch.setenv("MCP_TOKEN", token)
    try:
        monkeypatch.setenv("ENSEMBLE_ENV_ALLOW", "MCP_TOKEN")
        model = llm_server([calls(("whoami", {})), text("ok")])
        use_server(monkeypatch, model)
        handle, outcome = await run_to_end(dev_server.client, task_queue, flow, {"text": "who"})
        assert outcome is not None
        assert json.loads(tool_messages(model.requests()[1])[0]) == {"authorized": True}
        history = (await handle.fetch_history()).to_json()
        assert token not in history

        monkeypatch.setenv("ENSEMBLE_ENV_ALLOW", "")  # not on the allow-list: refused, not retried
        from ensemble.activities.mcp import pool

        await pool().close()  # a new session resolves its headers again
        model = llm_server([calls(("whoami", {})), text("ok")])
        use_server(monkeypatch, model)
        handle, outcome = await run_to_end(dev_server.client, task_queue, flow, {"text": "who"})
        assert outcome is None
        view = await describe_run(dev_server.client, handle.id)
        assert "${env:MCP_TOKEN} is not on this worker's allow-list" in (view.error or "")
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_command_that_runs_its_own_worker_calls_mcp_tools(dev_server, task_queue, llm_server, tmp_path):
    """`starter.py run --wait` with no worker polling serves the run itself; that worker loads the MCP
    SDK at the run's first tool call rather than at its start, and the tools work the same."""
    import yaml

    from tests.conftest import run_cli

    book = tmp_path / "ledger.jsonl"
    model = llm_server([calls(("add", {"a": 2, "b": 40})), text("done: 42")])
    path = tmp_path / "mcp_cli.flow.yaml"
    path.write_text(yaml.safe_dump(mcp_flow(MODEL, [stdio_server("calc", book)], TOOLS, ["add"])))
    env = dev_server.env(
        ENSEMBLE_TASK_QUEUE=task_queue, OPENAI_BASE_URL=model.openai_base, OPENAI_API_KEY="test-key", ENSEMBLE_LLM=""
    )
    done = run_cli(["run", str(path), "--input", json.dumps({"text": "sum"}), "--wait", "--json"], env)
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["status"] == "completed" and outcome["result"] == {"clerk": "done: 42"}, outcome
    [add] = ledger(book)  # one call, and the server saw it
    assert add["key"] is None
    assert json.loads(tool_messages(model.requests()[1])[0]) == {"sum": 42}
