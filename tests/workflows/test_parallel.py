"""The parallel pattern on real servers: join policies, merges, fan-out, conflicts, nesting."""

from __future__ import annotations

from ensemble.runs.view import describe_run
from ensemble.spec import RetrySpec
from tests.conftest import running_worker
from tests.flowkit import request, run_to_end, start


def vote(name: str, v: str, **extra) -> dict:
    return {"name": name, "agent": "voter", "input": {"vote": v, **extra}}


def flow(parallel: dict, **extra) -> dict:
    return {"name": "p", "imports": ["tests.agents"], "steps": [{"name": "votes", "parallel": parallel}], **extra}


def run(client, task_queue, data, run_input=None, **worker):
    return run_to_end(client, task_queue, data, {} if run_input is None else run_input, **worker)


async def test_majority_vote_over_named_branches(dev_server, task_queue):
    data = flow(
        {
            "branches": [vote("a", "approve"), vote("b", "reject"), vote("c", "approve")],
            "merge": {"strategy": "majority_vote"},
        }
    )
    handle, out = await run(dev_server.client, task_queue, data, max_cached_workflows=0)
    record = out.output["votes"]
    assert record["decision"] == "approve"
    assert [v["branch"] for v in record["votes"]] == ["a", "b", "c"]
    assert record["reason"] == "approve leads with 2 votes (approve 2, reject 1)"
    steps = (await describe_run(dev_server.client, handle.id)).steps
    assert sorted(s.name for s in steps) == ["votes.a", "votes.b", "votes.c"]
    assert {s.agent for s in steps} == {"voter"}


async def test_fan_out_over_a_list_with_bounded_concurrency(dev_server, task_queue):
    data = {
        "name": "fan",
        "imports": ["tests.agents"],
        "steps": [
            {"agent": "writer", "input": {"items": ["a", "bb", "ccc", "dddd", "eeeee"]}, "output": "doc"},
            {
                "name": "each",
                "parallel": {
                    "for_each": "$doc.items",
                    "as": "word",
                    "max_concurrency": 2,
                    "do": {"agent": "count", "input": {"text": "$word"}},
                },
            },
        ],
        "output": "$each.results",
    }
    handle, out = await run(dev_server.client, task_queue, data)
    assert out is not None, (await describe_run(dev_server.client, handle.id)).error
    assert [r["chars"] for r in out.output] == [1, 2, 3, 4, 5]
    names = [s.name for s in (await describe_run(dev_server.client, handle.id)).steps]
    assert sorted(names) == [
        "each[0].count",
        "each[1].count",
        "each[2].count",
        "each[3].count",
        "each[4].count",
        "writer",
    ]


async def test_all_fails_fast_on_a_failing_branch(dev_server, task_queue):
    data = flow({"branches": [vote("a", "approve"), vote("b", "fail")], "merge": {"strategy": "majority_vote"}})
    handle, out = await run(dev_server.client, task_queue, data)
    assert out is None
    error = (await describe_run(dev_server.client, handle.id)).error
    assert "step 'votes': branch 'b' failed under join policy 'all'" in error and "voter broke" in error


async def test_quorum_carries_on_past_a_failure(dev_server, task_queue):
    data = flow(
        {
            "branches": [vote("a", "fail"), vote("b", "reject"), vote("c", "reject")],
            "join": {"policy": "quorum", "quorum": 2},
            "merge": {"strategy": "majority_vote"},
        }
    )
    _, out = await run(dev_server.client, task_queue, data)
    record = out.output["votes"]
    assert record["decision"] == "reject"
    assert record["failed"] == [
        {
            "branch": "a",
            "error": "step 'votes.a' (agent 'voter') failed: agent 'voter' raised RuntimeError: voter broke",
        }
    ]


async def test_quorum_that_cannot_be_reached_fails_clearly(dev_server, task_queue):
    data = flow(
        {
            "branches": [vote("a", "fail"), vote("b", "fail"), vote("c", "approve")],
            "join": {"policy": "quorum", "quorum": 2},
        }
    )
    handle, out = await run(dev_server.client, task_queue, data)
    assert out is None
    assert (
        "2 successful branches needed, at most 1 possible (failed: a, b)"
        in (await describe_run(dev_server.client, handle.id)).error
    )


async def test_first_success_takes_the_first_and_cancels_the_rest(dev_server, task_queue):
    slow = {"name": "slow", "agent": "sleeper", "input": {"seconds": 3, "label": "slow"}}
    fast = {"name": "fast", "agent": "sleeper", "input": {"seconds": 0, "label": "fast"}}
    _, out = await run(
        dev_server.client, task_queue, flow({"branches": [slow, fast], "join": {"policy": "first_success"}})
    )
    record = out.output["votes"]
    assert record["by_branch"] == {"fast": {"label": "fast", "vote": "approve"}}
    assert record["missing"] == ["slow"]


async def test_deadline_is_a_durable_timer(time_env, task_queue):
    """On the time-skipping server: a branch whose retry backoff is two hours misses a one-hour deadline."""
    data = flow(
        {
            "branches": [
                {"name": "quick", "agent": "voter", "input": {"vote": "approve"}},
                {"name": "late", "agent": "flaky"},
            ],
            "join": {"policy": "deadline", "deadline_s": 3600},
        }
    )
    req = request(data, {}, task_queue)
    req.agents["flaky"].retry = RetrySpec(initial_interval_s=7200, max_interval_s=7200, max_attempts=2)
    async with running_worker(time_env.client, task_queue):
        out = await (await start(time_env.client, req)).result()
    assert out.output["votes"]["missing"] == ["late"]
    assert list(out.output["votes"]["by_branch"]) == ["quick"]


def conflicting(**parallel) -> dict:
    branches = [
        {
            "name": "left",
            "agent": "writer",
            "input": {"industry": "retail", "n": 1},
            "output": {"industry": "industry", "tags": "n"},
        },
        {
            "name": "right",
            "agent": "writer",
            "input": {"industry": "food & beverage", "n": 2},
            "output": {"industry": "industry", "tags": "n"},
        },
    ]
    return flow({"branches": branches, **parallel}, state={"tags": {"reducer": "append"}})


async def test_conflicting_writes_fail_clearly_without_an_adjudicator(dev_server, task_queue):
    handle, out = await run(dev_server.client, task_queue, conflicting())
    assert out is None
    error = (await describe_run(dev_server.client, handle.id)).error
    assert "conflict on state key 'industry': branches left, right wrote different values" in error


async def test_conflicting_writes_go_to_the_adjudicator_and_reducers_combine(dev_server, task_queue):
    _, out = await run(dev_server.client, task_queue, conflicting(on_conflict="referee"))
    assert out.state["industry"] == "food & beverage"
    assert out.state["tags"] == [1, 2]  # declared reducer: combined in branch order, not a conflict
    [conflict] = out.output["votes"]["conflicts"]
    assert conflict["key"] == "industry" and conflict["resolved_by"] == "referee"
    assert [c["value"] for c in conflict["candidates"]] == ["retail", "food & beverage"]
    assert conflict["reason"] == "longest value, from right"


async def test_tie_goes_to_the_adjudicator_with_its_declared_input(dev_server, task_queue):
    data = flow(
        {
            "branches": [vote("a", "approve"), vote("b", "reject")],
            "merge": {
                "strategy": "majority_vote",
                "tie_break": "adjudicator",
                "adjudicator": "referee",
                "adjudicator_input": {"ballots": "$ballots", "why": "$why", "case": "$input.case"},
            },
        }
    )
    handle, out = await run(dev_server.client, task_queue, data, {"case": "PR-1"})
    record = out.output["votes"]
    assert record["decision"] == "approve" and record["adjudicated"] is True and record["tie"] is True
    assert (
        record["reason"]
        == "tie between approve, reject (approve 1, reject 1); adjudicated by 'referee': 2 ballots seen: tie between approve, reject (approve 1, reject 1)"
    )
    assert "votes.adjudicate" in [s.name for s in (await describe_run(dev_server.client, handle.id)).steps]


async def test_nesting_sequence_in_parallel_in_sequence(dev_server, task_queue):
    data = {
        "name": "nest",
        "imports": ["tests.agents"],
        "state": {"log": {"reducer": "append"}},
        "steps": [
            {
                "name": "outer",
                "sequence": [
                    {
                        "name": "fan",
                        "parallel": {
                            "branches": [
                                {
                                    "name": "left",
                                    "sequence": [
                                        {"agent": "shout", "input": {"text": "$input.text"}, "output": {"log": "text"}},
                                        {"agent": "count", "input": {"text": "$input.text"}},
                                    ],
                                },
                                {
                                    "name": "right",
                                    "parallel": {
                                        "for_each": "$input.words",
                                        "do": {"agent": "shout", "input": {"text": "$item"}, "output": {"log": "text"}},
                                    },
                                },
                            ]
                        },
                    },
                ],
            },
        ],
    }
    handle, out = await run(
        dev_server.client, task_queue, data, {"text": "ab c", "words": ["x", "y"]}, max_cached_workflows=0
    )
    assert out.state["log"] == ["AB C", "X", "Y"]
    assert out.state["fan"]["by_branch"]["left"] == {"chars": 4, "words": 2}
    names = sorted(s.name for s in (await describe_run(dev_server.client, handle.id)).steps)
    assert names == [
        "outer.fan.left.count",
        "outer.fan.left.shout",
        "outer.fan.right[0].shout",
        "outer.fan.right[1].shout",
    ]
