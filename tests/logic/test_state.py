import pytest

from ensemble.logic.state import RunState, StateError, apply_reducer, output_writes, references, resolve
from ensemble.spec import StateKey

STATE = {"input": {"text": "hi", "items": [1, 2]}, "fields": {"total": {"value": 5}}, "cost": 1.5}


@pytest.mark.parametrize(
    "reducer, current, value, expected",
    [
        ("replace", [1], [2], [2]),
        ("append", None, 1, [1]),
        ("append", [1], [2], [1, [2]]),
        ("extend", [1], [2, 3], [1, 2, 3]),
        ("merge", {"a": {"x": 1}, "b": 1}, {"a": {"y": 2}}, {"a": {"x": 1, "y": 2}, "b": 1}),
        ("add", None, 2, 2),
        ("add", 1.5, 2, 3.5),
    ],
)
def test_reducers(reducer, current, value, expected):
    assert apply_reducer(reducer, current, value) == expected


@pytest.mark.parametrize("reducer, value", [("extend", 3), ("merge", [1]), ("add", "x"), ("add", True)])
def test_reducers_refuse_wrong_types(reducer, value):
    with pytest.raises(StateError, match="state key 'k'"):
        apply_reducer(reducer, None, value, "k")


def test_run_state_uses_declared_reducers_and_defaults():
    state = RunState({"notes": StateKey(reducer="append"), "total": StateKey(reducer="add", default=10)}, {"x": 1})
    state.write("notes", "a")
    state.write("notes", "b")
    state.write("total", 5)
    state.write("other", 1)
    state.write("other", 2)
    assert state.values == {"notes": ["a", "b"], "total": 15, "other": 2, "input": {"x": 1}}
    with pytest.raises(StateError, match="read-only"):
        state.write("input", {})
    snap = state.snapshot()
    snap["notes"].append("c")
    assert state.values["notes"] == ["a", "b"]


def test_resolve_templates():
    assert resolve("$input.text", STATE) == "hi"
    assert resolve({"v": "$fields.total.value", "n": ["$input.items.1", 3]}, STATE) == {"v": 5, "n": [2, 3]}
    assert resolve("$$5 off", STATE) == "$5 off"
    assert resolve("plain", STATE) == "plain"
    assert resolve("$input.missing?", STATE) is None
    assert resolve("$", STATE) == STATE
    assert resolve("$rows.*.v", {"rows": [{"v": 1}, {"v": [2]}]}) == [1, [2]]
    assert resolve("$rows.*", {"rows": [1, 2]}) == [1, 2]
    with pytest.raises(StateError, match="is not a list"):
        resolve("$input.text.*", STATE)
    with pytest.raises(StateError, match=r"'\$input.missing' is not in the run state"):
        resolve("$input.missing.deeper", STATE)
    with pytest.raises(StateError):
        resolve("$input.items.7", STATE)


def test_references_and_output_writes():
    assert sorted(references({"a": "$input.text", "b": ["$fields", "$$x", "lit", "$opt.x?"]})) == [
        "fields",
        "input",
        "opt",
    ]
    assert output_writes(None, "step", 1) == [("step", 1)]
    assert output_writes("key", "step", 1) == [("key", 1)]
    assert output_writes(
        {"label": "label", "all": "$", "v": "$.score.value"}, "s", {"label": "x", "score": {"value": 2}}
    ) == [
        ("label", "x"),
        ("all", {"label": "x", "score": {"value": 2}}),
        ("v", 2),
    ]
