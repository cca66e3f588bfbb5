"""Plan validation: every refusal reason, with a message naming what is wrong."""

import pytest

from ensemble.logic.plans import PlanError, sinks, validate_plan


def plan(*subtasks) -> dict:
    return {"subtasks": [dict(zip(("id", "agent", "depends_on"), s)) for s in subtasks]}


def test_valid_plan_and_its_sinks():
    p = validate_plan(plan(("a", "x", []), ("b", "y", ["a"]), ("c", "x", ["a"])), ["x", "y"], 5, 5)
    assert [s.id for s in p.subtasks] == ["a", "b", "c"]
    assert sinks(p) == ["b", "c"]


@pytest.mark.parametrize(
    "data, message",
    [
        ({"subtasks": []}, "the plan is malformed at subtasks: List should have at least 1 item"),
        ({"steps": []}, "the plan is malformed at subtasks: Field required"),
        (plan(("a", "x", []), ("a", "x", [])), "subtask ids used twice: a"),
        (plan(("a", "rogue", [])), "subtask 'a': agent 'rogue' is not allowed here (allowed: x, y)"),
        (plan(("a", "x", ["zz"])), "subtask 'a' depends on unknown subtask 'zz'"),
        (plan(("a", "x", ["b"]), ("b", "x", ["a"])), "dependency cycle: a -> b -> a"),
        (plan(*[(f"s{i}", "x", []) for i in range(6)]), "6 subtasks, more than the 5 allowed"),
        (
            plan(("a", "x", []), ("b", "x", ["a"]), ("c", "x", ["b"]), ("d", "x", ["c"])),
            "dependency chain of 4 subtasks, deeper than the 3 allowed",
        ),
        ({"subtasks": [{"id": "a"}]}, "a subtask has either agent or step"),
        (
            {"subtasks": [{"id": "a", "step": {"parallel": {"branches": []}}}]},
            "subtask 'a': its step is malformed at parallel",
        ),
        (
            {"subtasks": [{"id": "a", "step": {"sequence": [{"agent": "x"}, {"agent": "rogue"}]}}]},
            "subtask 'a': agent 'rogue' is not allowed here",
        ),
    ],
)
def test_refused_plans(data, message):
    with pytest.raises(PlanError) as exc:
        validate_plan(data, ["x", "y"], 5, 3)
    assert message in str(exc.value)
