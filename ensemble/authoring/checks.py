"""Checks of a flow beyond its schema: unique step and gate names, references to state keys that
exist, and template fields against the output models agents declare."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ensemble.authoring.problems import Problems
from ensemble.logic.state import reference_paths, references
from ensemble.spec import (
    AgentSpec,
    AgentStep,
    ChatStep,
    FlowSpec,
    GateStep,
    GateWhen,
    ParallelStep,
    SequenceStep,
    SupervisorStep,
    child_steps,
)


def steps_with_loc(steps: list[Any], loc: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Any]]:
    for i, step in enumerate(steps):
        yield from _step_tree(step, (*loc, i))


def _step_tree(step: Any, loc: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Any]]:
    yield loc, step
    for rel, child in child_steps(step):
        yield from _step_tree(child, (*loc, *rel))


def check_flow(spec: FlowSpec, agents: dict[str, AgentSpec], problems: Problems) -> None:
    """Checks beyond the schema: unique step names, references to state keys that exist."""
    written = {"input", *spec.state}
    for loc, step in steps_with_loc(spec.steps, ("steps",)):
        if isinstance(step, AgentStep):
            keys = set(step.output) if isinstance(step.output, dict) else {step.output or step.step_name}
            if "input" in keys:
                problems.add(
                    (*loc, "output"), "state key 'input' is the run's input and read-only; write to another key"
                )
            written.update(keys)
        elif isinstance(step, (ParallelStep, ChatStep, SupervisorStep, GateStep)):
            written.add(step.output or step.step_name)
        if isinstance(step, ParallelStep):
            if step.parallel.for_each:
                written.add(step.parallel.as_)
                written.add(f"{step.parallel.as_}_index")
    # Sibling steps need distinct names: a step's path (and its activity id) is built from them.
    groups = [(("steps",), spec.steps)]
    for loc, step in steps_with_loc(spec.steps, ("steps",)):
        if isinstance(step, SequenceStep):
            groups.append(((*loc, "sequence"), step.sequence))
        elif isinstance(step, ParallelStep):
            groups.append(((*loc, "parallel", "branches"), step.parallel.branches))
    gates_seen: set[str] = set()
    for base, siblings in groups:
        for i, sibling in enumerate(siblings):
            if not isinstance(sibling, GateStep):
                continue
            if sibling.name in gates_seen:  # people name a gate when they decide: one name, one gate
                problems.add((*base, i, "name"), f"gate name '{sibling.name}' is used twice in this flow")
            gates_seen.add(sibling.name)
            target = sibling.gate.changes_to
            if target and target not in [s.step_name for s in siblings[:i]]:
                problems.add(
                    (*base, i, "gate", "changes_to"),
                    f"'{target}' is not a step before gate '{sibling.name}' in the same list",
                )
        seen: set[str] = set()
        for i, sibling in enumerate(siblings):
            if sibling.step_name in seen:
                problems.add(
                    (*base, i, "name"), f"step name '{sibling.step_name}' is used twice here; give one of them a 'name'"
                )
            seen.add(sibling.step_name)

    shapes = _output_shapes(spec, agents, problems)

    def check_refs(template: Any, loc: tuple[Any, ...]) -> None:
        for key in references(template):
            if key != "$" and key not in written:
                problems.add(loc, f"'${key}' is not a state key of this flow (known: {', '.join(sorted(written))})")
        for path in reference_paths(template):
            key, _, rest = path.partition(".")
            if key in shapes and rest:
                missing = _missing_field(shapes[key][1], rest)
                if missing:
                    agent, schema = shapes[key]
                    problems.add(
                        loc,
                        f"'${path}': agent '{agent}' declares no field '{missing[0]}' in its output "
                        f"(fields: {', '.join(missing[1]) or 'none'})",
                    )

    for loc, step in steps_with_loc(spec.steps, ("steps",)):
        if isinstance(step, AgentStep):
            check_refs(step.input, (*loc, "input"))
        elif isinstance(step, ParallelStep) and step.parallel.for_each:
            check_refs(step.parallel.for_each, (*loc, "parallel", "for_each"))
        elif isinstance(step, ChatStep):
            check_refs(step.chat.topic, (*loc, "chat", "topic"))
        elif isinstance(step, GateStep):
            when = step.gate.when
            check_refs(when.value if isinstance(when, GateWhen) else when, (*loc, "gate", "when"))
            check_refs(step.gate.show, (*loc, "gate", "show"))
        elif isinstance(step, SupervisorStep):
            check_refs(step.supervisor.planner_input, (*loc, "supervisor", "planner_input"))
            for name in step.supervisor.fallbacks:
                if name not in step.supervisor.agents:
                    problems.add(
                        (*loc, "supervisor", "fallbacks", name), f"'{name}' is not one of this supervisor's agents"
                    )
    check_refs(spec.output, ("output",))


def _output_shapes(
    spec: FlowSpec, agents: dict[str, AgentSpec], problems: Problems
) -> dict[str, tuple[str, dict[str, Any]]]:
    """State keys written by agent steps whose agent declares an output model: key -> (agent, the
    JSON schema of what lands there)."""
    shapes: dict[str, tuple[str, dict[str, Any]]] = {}
    for loc, step in steps_with_loc(spec.steps, ("steps",)):
        agent = agents.get(step.agent) if isinstance(step, AgentStep) else None
        schema = agent.output_schema if agent is not None else None
        if not schema or not isinstance(step, AgentStep):
            continue
        if isinstance(step.output, dict):
            for key, field in step.output.items():
                field = (field[1:] if field.startswith("$") else field).lstrip(".")
                missing = _missing_field(schema, field) if field else None
                if missing:
                    problems.add(
                        (*loc, "output", key),
                        f"agent '{step.agent}' declares no field '{missing[0]}' in its "
                        f"output (fields: {', '.join(missing[1]) or 'none'})",
                    )
                    continue
                sub = _sub_schema(schema, field) if field else schema
                if sub is not None:
                    shapes[key] = (step.agent, sub)
        else:
            shapes[step.output or step.step_name] = (step.agent, schema)
    return shapes


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        return schema.get("$defs", {}).get(ref.rsplit("/", 1)[-1], {})
    return node


def _sub_schema(schema: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The schema at `path` (fields separated by dots), or None where it cannot be known."""
    node = _resolve(schema, schema)
    for part in path.split("."):
        props = node.get("properties")
        if not isinstance(props, dict) or part not in props:
            return None
        node = _resolve(schema, props[part])
    return node


def _missing_field(schema: dict[str, Any], path: str) -> tuple[str, list[str]] | None:
    """(the first field of `path` a closed object schema does not declare, the fields it does)."""
    node = _resolve(schema, schema)
    for part in path.split("."):
        if "[" in part or part.isdigit():
            return None  # an index: lists are not followed
        props = node.get("properties")
        if not isinstance(props, dict):
            return None
        if part not in props:
            open_ended = node.get("additionalProperties") not in (None, False)
            return None if open_ended else (part, sorted(props))
        node = _resolve(schema, props[part])
    return None
