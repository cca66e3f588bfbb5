"""The hierarchical pattern on a real server: plan, delegate to child workflows, reroute, re-plan."""

from __future__ import annotations

import asyncio

from temporalio.api.enums.v1 import EventType, ParentClosePolicy

from ensemble.runs.view import describe_run
from tests import agents
from tests.conftest import running_worker
from tests.flowkit import request, run_to_end, start


def supervised(**extra) -> dict:
    sup = {
        "planner": "boss",
        "planner_input": {"plan": "$input.plan", "replan": "$input.replan?"},
        "agents": ["shout", "count", "broken", "picky", "held", "writer"],
        **extra,
    }
    return {"name": "sup", "imports": ["tests.agents"], "steps": [{"name": "lead", "supervisor": sup}]}


SHOUT_COUNT = [
    {"id": "loud", "agent": "shout", "input": {"text": "$input.text"}},
    {"id": "size", "agent": "count", "input": {"text": "$results.loud.text"}, "depends_on": ["loud"]},
    {"id": "words", "agent": "count", "input": {"text": "$input.text"}},
]


def run(client, task_queue, data, run_input, **worker):
    return run_to_end(client, task_queue, data, run_input, **worker)


async def test_plan_runs_as_child_workflows_in_dependency_order(dev_server, task_queue):
    handle, out = await run(
        dev_server.client, task_queue, supervised(), {"text": "one two", "plan": SHOUT_COUNT}, max_cached_workflows=0
    )
    record = out.state["lead"]
    assert record["results"] == {
        "loud": {"text": "ONE TWO"},
        "size": {"chars": 7, "words": 2},
        "words": {"chars": 7, "words": 2},
    }
    assert record["output"] == {"size": {"chars": 7, "words": 2}, "words": {"chars": 7, "words": 2}}  # the plan's sinks
    assert [s["status"] for s in record["subtasks"]] == ["completed"] * 3
    history = await handle.fetch_history()
    children = [
        e.start_child_workflow_execution_initiated_event_attributes
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
    ]
    assert [c.workflow_id for c in children] == [
        f"{handle.id}/lead.loud",
        f"{handle.id}/lead.words",
        f"{handle.id}/lead.size",
    ]
    assert all(c.parent_close_policy == ParentClosePolicy.PARENT_CLOSE_POLICY_TERMINATE for c in children)
    view = await describe_run(dev_server.client, handle.id)
    steps = [(s.name, s.agent) for s in view.steps]  # in the order they started: loud and words run side by side
    assert sorted(steps) == sorted(
        [("lead.plan", "boss"), ("lead.loud", "shout"), ("lead.words", "count"), ("lead.size", "count")]
    )
    assert steps[0] == ("lead.plan", "boss") and steps.index(("lead.loud", "shout")) < steps.index(
        ("lead.size", "count")
    )


async def test_failed_subtask_is_rerouted_to_its_fallback(dev_server, task_queue):
    plan = [{"id": "risky", "agent": "broken", "input": {"text": "fallback"}}]
    _, out = await run(
        dev_server.client,
        task_queue,
        supervised(fallbacks={"broken": "echo"}, agents=["broken", "echo"]),
        {"plan": plan},
    )
    record = out.state["lead"]
    assert record["results"]["risky"] == {"text": "fallback"}
    assert record["subtasks"][0]["fallback"] == "echo" and record["subtasks"][0]["agent"] == "echo"
    assert record["rounds"] == 1


async def test_replan_with_the_failure_as_context(dev_server, task_queue):
    plan = [{"id": "first", "agent": "picky"}]
    replan = [{"id": "second", "agent": "shout", "input": {"text": "recovered"}}]
    _, out = await run(dev_server.client, task_queue, supervised(), {"plan": plan, "replan": replan})
    record = out.state["lead"]
    assert record["rounds"] == 2
    assert record["failures"] == [
        "subtask 'first' (picky) failed: step 'first' (agent 'picky') failed: agent 'picky' raised KeyError: 'customer_id'"
    ]
    assert record["rationale"].startswith("re-planned after: subtask 'first' (picky) failed")
    assert record["output"] == {"text": "RECOVERED"}


async def test_gives_up_clearly_after_the_replans(dev_server, task_queue):
    plan = [{"id": "first", "agent": "picky"}]
    handle, out = await run(dev_server.client, task_queue, supervised(max_replans=0), {"plan": plan})
    assert out is None
    error = (await describe_run(dev_server.client, handle.id)).error
    assert "step 'lead': subtask 'first' (picky) failed" in error and "gave up after 0 re-plan(s)" in error


async def test_invalid_plan_is_refused_before_anything_runs(dev_server, task_queue):
    plan = [{"id": "a", "agent": "shout", "depends_on": ["b"]}, {"id": "b", "agent": "echo", "depends_on": ["a"]}]
    handle, out = await run(dev_server.client, task_queue, supervised(), {"plan": plan})
    assert out is None
    view = await describe_run(dev_server.client, handle.id)
    assert "the planner's plan was refused: subtask 'b': agent 'echo' is not allowed here" in view.error
    assert [s.name for s in view.steps] == ["lead.plan"]  # no subtask started


async def test_subtasks_are_visible_in_status_while_running(dev_server, task_queue):
    plan = [{"id": "quick", "agent": "shout", "input": {"text": "a"}}, {"id": "wait", "agent": "held", "input": {}}]
    agents.RELEASE.clear()
    async with running_worker(dev_server.client, task_queue):
        handle = await start(dev_server.client, request(supervised(), {"plan": plan}, task_queue))
        for _ in range(100):
            view = await describe_run(dev_server.client, handle.id)
            seen = {s.name: s.status for s in view.steps}  # quick and wait run side by side: any order
            # The history can record quick's end before the supervisor's next workflow task has
            # taken it in, which is when the query answers from: wait for both to agree.
            progress = await handle.query("progress")
            if seen == {"lead.plan": "completed", "lead.quick": "completed", "lead.wait": "running"} and progress[
                "running"
            ] == ["lead.wait"]:
                break
            await asyncio.sleep(0.05)
        assert {s.name: s.status for s in view.steps}["lead.wait"] == "running"
        assert progress["running"] == ["lead.wait"]
        agents.RELEASE.set()
        out = await handle.result()
    assert out.state["lead"]["results"]["wait"] == {"released": True}


async def test_fan_out_subtask_runs_once_per_item(dev_server, task_queue):
    plan = [{"id": "each", "agent": "count", "for_each": "$input.words", "input": {"text": "$item"}}]
    _, out = await run(dev_server.client, task_queue, supervised(), {"plan": plan, "words": ["a", "bb", "ccc"]})
    assert [r["chars"] for r in out.state["lead"]["results"]["each"]] == [1, 2, 3]


async def test_a_subtask_can_be_a_parallel_vote(dev_server, task_queue):
    vote = {
        "parallel": {
            "branches": [
                {"name": n, "agent": "voter", "input": {"vote": v}}
                for n, v in (("a", "$input.first"), ("b", "reject"), ("c", "approve"))
            ],
            "merge": {"strategy": "majority_vote"},
        }
    }
    plan = [
        {"id": "pick", "agent": "writer", "input": {"vote": "approve"}},
        {"id": "vote", "step": vote, "input": {"first": "$results.pick.vote"}, "depends_on": ["pick"]},
    ]
    handle, out = await run(dev_server.client, task_queue, supervised(agents=["writer", "voter"]), {"plan": plan})
    assert out is not None, (await describe_run(dev_server.client, handle.id)).error
    record = out.state["lead"]["results"]["vote"]
    assert (record["decision"], record["tally"]) == ("approve", {"approve": 2, "reject": 1})
    names = [s.name for s in (await describe_run(dev_server.client, handle.id)).steps]
    assert names == ["lead.plan", "lead.pick", "lead.vote.a", "lead.vote.b", "lead.vote.c"]


async def test_a_step_subtask_naming_a_disallowed_agent_is_refused(dev_server, task_queue):
    plan = [{"id": "vote", "step": {"parallel": {"branches": [{"agent": "voter", "input": {"vote": "approve"}}]}}}]
    handle, out = await run(dev_server.client, task_queue, supervised(agents=["shout"]), {"plan": plan})
    assert out is None
    assert (
        "subtask 'vote': agent 'voter' is not allowed here" in (await describe_run(dev_server.client, handle.id)).error
    )
