"""The same N-step chain of `tick` agents, four ways: Ensemble (standard and fast path), plain
Temporal (activities and local activities), and LangGraph with a durable SQLite checkpointer."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle

from bench.agents import chain_flow, stamp
from bench.baseline import BASELINE_WORKFLOW
from ensemble.authoring.flows import parse_flow
from ensemble.runtime.launch import without_duplicate_agents
from ensemble.spec import WORKFLOW_NAME, FlowOutcome, RunRequest


@dataclass
class ChainRun:
    ticks: list[dict[str, int]]
    seconds: float  # client side: from the start request to the result
    handle: WorkflowHandle | None = None


@dataclass
class EnsembleChain:
    client: Client
    task_queue: str
    fast: bool = False
    pids: dict[str, int] = field(default_factory=dict)  # server and worker, for CPU per run
    _requests: dict[int, RunRequest] = field(default_factory=dict)

    @property
    def temporal(self) -> bool:
        return True

    def request(self, steps: int, run_input: Any) -> RunRequest:
        if steps not in self._requests:
            loaded = parse_flow(chain_flow(steps, self.fast), "bench chain")
            self._requests[steps] = without_duplicate_agents(  # as the client records it: each agent once
                RunRequest(flow=loaded.spec, agents=loaded.agents, input=None, task_queue=self.task_queue)
            )
        return self._requests[steps].model_copy(update={"input": run_input})

    async def run(self, steps: int) -> ChainRun:
        req = self.request(steps, {"n": 0})
        t = time.perf_counter()
        handle = await self.client.start_workflow(
            WORKFLOW_NAME, req, id=f"bench-{uuid.uuid4().hex[:12]}", task_queue=self.task_queue, result_type=FlowOutcome
        )
        outcome = await handle.result()
        return ChainRun(ticks=outcome.output["ticks"], seconds=time.perf_counter() - t, handle=handle)


@dataclass
class TemporalChain:
    client: Client
    task_queue: str
    local: bool = False
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def temporal(self) -> bool:
        return True

    async def run(self, steps: int) -> ChainRun:
        t = time.perf_counter()
        handle = await self.client.start_workflow(
            BASELINE_WORKFLOW,
            args=[steps, self.local],
            id=f"baseline-{uuid.uuid4().hex[:12]}",
            task_queue=self.task_queue,
        )
        ticks = await handle.result()
        return ChainRun(ticks=ticks, seconds=time.perf_counter() - t, handle=handle)


class LangGraphChain:
    """A StateGraph of N nodes in a line, each running `tick`, checkpointed by SqliteSaver into a
    file with `durability="sync"`: each step's checkpoint is on disk before the next step starts,
    as Temporal records each activity's result before scheduling the next."""

    temporal = False
    pids: dict[str, int] = {}  # runs in this process

    def __init__(self, db: Path) -> None:
        from langgraph.checkpoint.sqlite import SqliteSaver  # the `bench` extra

        self._conn = sqlite3.connect(str(db), check_same_thread=False)
        self._saver = SqliteSaver(self._conn)
        self._graphs: dict[int, Any] = {}
        self._ticks: list[dict[str, int]] = []

    def _graph(self, steps: int) -> Any:
        from typing import TypedDict

        from langgraph.graph import END, START, StateGraph

        class State(TypedDict):
            data: dict

        def node(state: State) -> dict[str, Any]:
            out = stamp(state["data"])
            self._ticks.append(out)
            return {"data": out}

        graph = StateGraph(State)
        names = [f"s{i:02d}" for i in range(1, steps + 1)]
        for name in names:
            graph.add_node(name, node)
        graph.add_edge(START, names[0])
        for a, b in zip(names, names[1:]):
            graph.add_edge(a, b)
        graph.add_edge(names[-1], END)
        return graph.compile(checkpointer=self._saver)

    def _run(self, steps: int) -> ChainRun:
        graph = self._graphs.setdefault(steps, self._graph(steps))
        self._ticks = []
        t = time.perf_counter()
        graph.invoke({"data": {"n": 0}}, {"configurable": {"thread_id": uuid.uuid4().hex}}, durability="sync")
        return ChainRun(ticks=list(self._ticks), seconds=time.perf_counter() - t)

    async def run(self, steps: int) -> ChainRun:
        return await asyncio.to_thread(self._run, steps)

    def close(self) -> None:
        self._conn.close()


def langgraph_available() -> str | None:
    """None when LangGraph and its SQLite checkpointer import; otherwise why not."""
    try:
        import langgraph.checkpoint.sqlite  # noqa: F401
        import langgraph.graph  # noqa: F401
    except ImportError as err:
        return f"LangGraph is not installed ({err.name}): pip install -e '.[bench]'"
    return None
