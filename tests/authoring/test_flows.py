"""Flow files: loading, validation errors naming file, line and path, discovery."""

import json
from pathlib import Path

import pytest

from ensemble.authoring.flows import all_flows, find_flow, load_flow_file, register_flow
from ensemble.spec import FlowSpec
from ensemble.spec.errors import InputError
from tests.conftest import ROOT

GOOD = """\
name: tiny
imports: [tests.agents]
state:
  log: {reducer: append}
steps:
  - agent: shout
    input: {text: $input.text}
  - name: tail
    sequence:
      - agent: count
        input: {text: $shout.text}
        output: {log: chars, counted: $}
output: {loud: $shout.text, log: $log}
"""


def write(tmp_path: Path, text: str, name: str = "flow.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path) -> str:
    with pytest.raises(InputError) as exc:
        load_flow_file(path)
    return str(exc.value)


def test_valid_flow_loads_with_agents_resolved(tmp_path):
    flow = load_flow_file(write(tmp_path, GOOD))
    assert flow.spec.name == "tiny"
    assert flow.agent_order == ["shout", "count"]
    assert set(flow.agents) == {"shout", "count"}
    assert flow.agents["shout"].handler == "tests.agents:shout"
    assert flow.agents["count"].output_schema["properties"].keys() == {"chars", "words"}


def test_json_flow_file_loads(tmp_path):
    import yaml

    path = write(tmp_path, json.dumps(yaml.safe_load(GOOD)), "tiny.flow.json")
    assert load_flow_file(path).spec.name == "tiny"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("name: x\nsteps:\n  - agent: [\n", r"flow.yaml:4: not valid YAML"),
        ("- just\n- a list\n", r"flow.yaml:1: \(top level\): a flow file holds a mapping"),
        ("name: x\n", r"flow.yaml:1: steps: Field required"),
        (
            "name: x\nsteps:\n  - agent: echo\n    imports: []\n",
            r"flow.yaml:4: steps\[0\].imports: Extra inputs are not permitted",
        ),
        (
            "name: x\nsteps:\n  - agent: echo\n  - thing: 1\n",
            r"flow.yaml:4: steps\[1\]: a step needs one of: 'agent', 'sequence', 'parallel', 'chat', 'supervisor' or 'gate'",
        ),
        (
            "name: x\nimports: [tests.agents]\nsteps:\n  - agent: echo\n  - agent: nobody\n",
            r"flow.yaml:5: steps\[1\].agent: unknown agent 'nobody'",
        ),
        (
            "name: x\nimports: [no_such_module_xyz]\nsteps:\n  - agent: echo\n",
            r"flow.yaml:2: imports\[0\]: cannot import module 'no_such_module_xyz'",
        ),
        (
            "name: x\nimports: [tests.agents]\nsteps:\n  - agent: echo\n  - agent: echo\n",
            r"flow.yaml:5: steps\[1\].name: step name 'echo' is used twice here",
        ),
        (
            "name: x\nimports: [tests.agents]\nsteps:\n  - agent: echo\n    input: {a: $fieldz.x}\n",
            r"flow.yaml:5: steps\[0\].input: '\$fieldz' is not a state key of this flow",
        ),
        (
            "name: x\nstate:\n  k: {reducer: sum}\nimports: [tests.agents]\nsteps:\n  - agent: echo\n",
            r"flow.yaml:3: state.k.reducer: Input should be 'replace', 'append', 'extend', 'merge' or 'add'",
        ),
        (
            "name: x\nagents:\n  - {name: svc, kind: http}\nsteps:\n  - agent: svc\n",
            r"flow.yaml:3: agents\[0\]: an http agent needs url",
        ),
        (  # a field the agent's declared output model does not have
            "name: x\nimports: [ensemble.examples.hello.agents]\nsteps:\n  - agent: greeter\n    input: {name: $input.name}\n"
            "    output: greeting\n  - agent: word_stats\n    input: {text: $greeting.txt}\n",
            r"flow.yaml:8: steps\[1\].input: '\$greeting.txt': agent 'greeter' declares no field 'txt' in its output \(fields: text\)",
        ),
        (
            "name: x\nimports: [ensemble.examples.hello.agents]\nsteps:\n  - agent: greeter\n    input: {name: $input.name}\n"
            "    output: {g: $.txt}\n",
            r"flow.yaml:6: steps\[0\].output.g: agent 'greeter' declares no field 'txt' in its output",
        ),
        (
            "name: x\nsteps:\n  - name: s\n    sequence:\n      - agent: 'bad name!'\n",
            r"flow.yaml:5: steps\[0\].sequence\[0\].agent: String should match pattern",
        ),
    ],
)
def test_invalid_flow_files_name_file_line_and_path(tmp_path, text, expected):
    message = error_of(write(tmp_path, text))
    assert message.startswith(str(tmp_path))
    assert __import__("re").search(expected, message), message


def test_several_problems_are_counted(tmp_path):
    text = "name: x\nimports: [tests.agents]\nsteps:\n  - agent: nobody\n  - agent: noone\n"
    with pytest.raises(InputError) as exc:
        load_flow_file(write(tmp_path, text))
    assert "(and 1 more problem: `starter.py validate FILE` lists them)" in str(exc.value)
    assert len(exc.value.details) == 2


def test_find_flow_by_name_and_path(tmp_path, monkeypatch):
    assert find_flow("document_pipeline").spec.name == "document_pipeline"
    path = write(tmp_path, GOOD, "tiny.flow.yaml")
    assert find_flow(str(path)).spec.name == "tiny"
    with pytest.raises(InputError, match="unknown flow 'tiny'"):
        find_flow("tiny")
    monkeypatch.setenv("ENSEMBLE_FLOW_PATH", str(tmp_path))
    assert find_flow("tiny").source == path.resolve()
    assert "tiny" in [f.spec.name for f in all_flows()]
    with pytest.raises(InputError, match="flow file not found"):
        find_flow(str(tmp_path / "nope.yaml"))


def test_python_registered_flow_is_found_by_name():
    import tests.agents  # noqa: F401  (registers the agents)

    register_flow(FlowSpec(name="py_flow", steps=[{"agent": "shout", "input": {"text": "$input"}}]))
    flow = find_flow("py_flow")
    assert flow.agents["shout"].name == "shout"
    assert "py_flow" in [f.spec.name for f in all_flows()]


def test_bundled_flows_are_valid_and_have_example_inputs():
    from ensemble.authoring.flows import EXAMPLES_DIR

    flows = {f.spec.name: f for f in all_flows() if f.source and EXAMPLES_DIR in f.source.parents}
    assert "document_pipeline" in flows
    for flow in flows.values():
        assert flow.example_input and flow.example_input.exists(), flow.spec.name


def test_published_json_schema_is_current_and_validates_bundled_flows():
    import jsonschema
    import yaml

    from ensemble.authoring.flows import EXAMPLES_DIR
    from ensemble.spec.schema import flow_schema

    DEFAULT_OUT = ROOT / "docs" / "flow.schema.json"

    assert DEFAULT_OUT.read_text() == flow_schema(), (
        "run `python -m ensemble.spec.schema docs/flow.schema.json` to refresh docs/flow.schema.json"
    )
    schema = json.loads(DEFAULT_OUT.read_text())
    for path in EXAMPLES_DIR.glob("*/flow.yaml"):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "x", "steps": [{"agent": "a", "retries": 1}]}, schema)
