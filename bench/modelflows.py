"""The same 5-model-call run three ways, for the model-bound suite (bench/modelbound.py).

Each step sends the model server the same request: a system message and a user message whose
first line is `RUN STEP` (the server logs it, so it can count calls per step) followed by the
previous step's answer. Ensemble runs a flow of `llm` agents; the plain-Temporal baseline is one
hand-written workflow with one activity per step calling the server with httpx; LangGraph is an
async StateGraph with an async SQLite checkpointer calling the server with httpx.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
from temporalio import activity

# An experiment's knob: the baseline's activities with a heartbeat timeout of this many seconds, as
# Ensemble's `llm` agents have (20 s); unset, none, as a hand-written workflow would have.
BASELINE_HEARTBEAT_S = float(os.environ.get("BENCH_BASELINE_HEARTBEAT_S") or 0)

MODEL = "bench-model"
INSTRUCTIONS = "You are one step of a document pipeline. Answer in one short sentence."
MAX_TOKENS = 1024
MODEL_BASELINE_WORKFLOW = "BenchModelBaseline"
_client: httpx.AsyncClient | None = None


def step_names(steps: int) -> list[str]:
    return [f"m{i}" for i in range(1, steps + 1)]


def user_message(run: str, step: str, text: str) -> str:
    return f"{run} {step}\n{text}"


def body(run: str, step: str, text: str) -> dict[str, Any]:
    """What every system sends per step (Ensemble builds the same from its agent spec)."""
    return {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": user_message(run, step, text)},
        ],
        "max_tokens": MAX_TOKENS,
    }


def http() -> httpx.AsyncClient:
    """One client per process, no connection cap (the baseline must not be the one a cap binds)."""
    global _client
    if _client is None:
        _client = httpx.AsyncClient(limits=httpx.Limits(max_connections=None, max_keepalive_connections=None))
    return _client


async def call_model(base_url: str, run: str, step: str, text: str) -> str:
    r = await http().post(
        f"{base_url}/chat/completions", json=body(run, step, text), timeout=httpx.Timeout(300, connect=10)
    )
    r.raise_for_status()
    return r.json()["choices"][0]["message"]["content"]


# ---------------------------------------------------------------- Ensemble


def model_flow(steps: int = 5, heartbeat_s: float | None = None) -> dict[str, Any]:
    """`steps` llm agents in a line, each given the previous one's answer."""
    names = step_names(steps)
    agents = []
    for name in names:
        agent: dict[str, Any] = {
            "name": name, "kind": "llm", "model": f"openai:{MODEL}",
            "llm": {"instructions": INSTRUCTIONS, "prompt": f"{{run}} {name}\n{{text}}", "max_tokens": MAX_TOKENS},
        }  # fmt: skip
        if heartbeat_s:
            agent["heartbeat_s"] = heartbeat_s
        agents.append(agent)
    return {
        "name": f"bench_model{steps}",
        "agents": agents,
        "steps": [
            {
                "name": name,
                "agent": name,
                "input": {"run": "$input.run", "text": f"${names[i - 1]}" if i else "$input.text"},
            }
            for i, name in enumerate(names)
        ],
        "output": f"${names[-1]}",
    }


# ---------------------------------------------------------------- plain Temporal


@activity.defn(name="bench_model_step")
async def model_step(run: str, step: str, text: str) -> str:
    return await call_model(os.environ["OPENAI_BASE_URL"].rstrip("/"), run, step, text)


# ---------------------------------------------------------------- LangGraph


def langgraph_graph(base_url: str, steps: int, checkpointer: Any) -> Any:
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph

    class State(TypedDict):
        run: str
        text: str

    def node(name: str) -> Any:
        async def call(state: State) -> dict[str, Any]:
            return {"text": await call_model(base_url, state["run"], name, state["text"])}

        return call

    graph = StateGraph(State)
    names = step_names(steps)
    for name in names:
        graph.add_node(name, node(name))
    graph.add_edge(START, names[0])
    for a, b in zip(names, names[1:]):
        graph.add_edge(a, b)
    graph.add_edge(names[-1], END)
    return graph.compile(checkpointer=checkpointer)
