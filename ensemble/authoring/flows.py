"""Finding, loading and validating flows, and resolving the agents they use.

A flow comes from a flow file (YAML or JSON), or from Python via `register_flow(FlowSpec(...))`.
Bundled flows live in `examples/<name>/flow.yaml`; more are found in the directories listed in
`ENSEMBLE_FLOW_PATH` (os.pathsep-separated) and the modules listed in `ENSEMBLE_FLOW_MODULES`
(comma-separated), which may register flows and agents when imported.

Loading a flow to run it (`trusted=True`, the default) imports the modules it lists and the
handlers its agents name, and deploys them to this process: a worker runs only code deployed that
way (docs/security.md). `validate` loads with `trusted=False`: nothing is imported, and what
cannot be checked without importing is reported as not checked.
Every error names the file, the path inside it (with its line when known) and what is wrong.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ensemble.authoring.agents import deploy_agent, deploy_handler, deploy_module, get_agent, is_deployed
from ensemble.authoring.reading import load_document, one_line
from ensemble.authoring.tools import attach_to_agents, deploy_mcp_server
from ensemble.logic.state import reference_paths, references
from ensemble.spec import (
    STEP_KINDS,
    AgentSpec,
    AgentStep,
    ChatStep,
    FlowSpec,
    GateStep,
    GateWhen,
    ParallelStep,
    SequenceStep,
    SupervisorStep,
    agent_refs,
    child_steps,
)
from ensemble.spec.errors import InputError

EXAMPLES_DIR = (Path(__file__).resolve().parent.parent / "examples").resolve()  # bundled with the package
STEP_TAGS = set(STEP_KINDS)
PATTERN_NAMES: dict[type, str] = {
    ParallelStep: "parallel",
    ChatStep: "group_chat",
    SupervisorStep: "hierarchical",
    GateStep: "approval",
}

_PY_FLOWS: dict[str, FlowSpec] = {}


@dataclass
class LoadedFlow:
    spec: FlowSpec
    agents: dict[str, AgentSpec]
    source: Path | None = None
    unchecked: list[str] = field(default_factory=list)  # what a load without imports could not check

    @property
    def example_input(self) -> Path | None:
        if not self.spec.example_input:
            return None
        base = self.source.parent if self.source else Path.cwd()
        return (base / self.spec.example_input).resolve()

    @property
    def patterns(self) -> list[str]:
        found: list[str] = []
        if len(self.spec.steps) > 1:
            found.append("sequential")
        for step in walk_steps(self.spec.steps):
            kind = (
                "sequential"
                if isinstance(step, SequenceStep) and len(step.sequence) > 1
                else PATTERN_NAMES.get(type(step))
            )
            if kind and kind not in found:
                found.append(kind)
        return found

    @property
    def agent_order(self) -> list[str]:
        """Agents in the order a run meets them (a parallel step's adjudicators after its branches)."""
        names: list[str] = []

        def visit(step: Any) -> None:
            own = [name for _, name in agent_refs(step)]
            later = isinstance(step, ParallelStep)
            names.extend(n for n in ([] if later else own) if n not in names)
            for _, child in child_steps(step):
                visit(child)
            names.extend(n for n in (own if later else []) if n not in names)

        for step in self.spec.steps:
            visit(step)
        return names


def register_flow(spec: FlowSpec) -> FlowSpec:
    """Make a flow defined in Python runnable by name."""
    _PY_FLOWS[spec.name] = spec
    return spec


def walk_steps(steps: list[Any]) -> Iterator[Any]:
    """Every step, depth first, in declaration order."""
    for _, step in _steps_with_loc(steps, ()):
        yield step


# ---------------------------------------------------------------- errors with places


def format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _strip_tags(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop the step union's tag that pydantic puts after a step's index."""
    return tuple(p for i, p in enumerate(loc) if not (i and isinstance(loc[i - 1], int) and p in STEP_TAGS))


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of a path inside a composed YAML document, as deep as it exists."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            nxt = node.value[part]
        else:
            nxt = None
        if nxt is None:
            break
        node = nxt
        line = node.start_mark.line + 1
    return line


class _Problems:
    def __init__(self, where: str, tree: yaml.Node | None) -> None:
        self.where, self.tree = where, tree
        self.items: list[str] = []
        self.trusted = True
        self.unchecked: list[str] = []

    def not_checked(self, loc: tuple[Any, ...], message: str) -> None:
        line = _line_of(self.tree, loc) if self.tree is not None else None
        place = f"{self.where}:{line}" if line else self.where
        self.unchecked.append(f"{place}: {format_loc(loc)}: {message}")

    def add(self, loc: tuple[Any, ...], message: str) -> None:
        line = _line_of(self.tree, loc) if self.tree is not None else None
        place = f"{self.where}:{line}" if line else self.where
        self.items.append(one_line(f"{place}: {format_loc(loc)}: {message}", 1000))

    def raise_if_any(self) -> None:
        if self.items:
            n = len(self.items) - 1
            more = f" (and {n} more problem{'s' if n > 1 else ''}: `starter.py validate FILE` lists them)" if n else ""
            err = InputError(self.items[0] + more)
            err.details = self.items
            raise err


# ---------------------------------------------------------------- loading


def plain_message(msg: str) -> str:
    """A validation message as a person reads it: without pydantic's "Value error, " prefix."""
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


def parse_flow(
    data: Any, where: str, tree: yaml.Node | None = None, base: Path | None = None, *, trusted: bool = True
) -> LoadedFlow:
    """Validate flow data (already parsed) and resolve its agents. `trusted=False` imports
    nothing (validating a file someone else wrote) and lists what it could not check."""
    problems = _Problems(where, tree)
    problems.trusted = trusted
    if not isinstance(data, dict):
        problems.add((), "a flow file holds a mapping with at least 'name' and 'steps'")
        problems.raise_if_any()
    try:
        spec = FlowSpec.model_validate(data)
    except ValidationError as err:
        for e in err.errors():
            problems.add(_strip_tags(tuple(e["loc"])), plain_message(e["msg"]))
        problems.raise_if_any()
        raise  # unreachable
    agents = resolve_agents(spec, problems)
    if isinstance(spec.input_schema, str):
        spec.input_schema = _model_schema(spec.input_schema, problems)
    loaded = LoadedFlow(spec=spec, agents=agents, source=base, unchecked=problems.unchecked)
    check_flow(loaded, problems)
    problems.raise_if_any()
    if trusted:
        _deploy(loaded, problems)
        problems.raise_if_any()
    return loaded


def _deploy(loaded: LoadedFlow, problems: _Problems) -> None:
    """Allow runs of this process to use the code this flow names (its agents' handlers, tools
    and models): the flow was loaded on purpose, by the process's own configuration or user."""
    by_name = {a.name: i for i, a in enumerate(loaded.spec.agents)}
    for server in loaded.spec.mcp_servers:  # started or connected to by name only (docs/tools.md)
        deploy_mcp_server(server, loaded.source.parent if loaded.source else None)
    for name, agent in loaded.agents.items():
        try:
            deploy_agent(agent)
            for tool in agent.tool_specs:
                if tool.kind == "function" and tool.handler:
                    deploy_handler(tool.handler)
            if agent.llm and agent.llm.output_model:
                deploy_handler(agent.llm.output_model)
        except Exception as err:  # an unimportable handler is the flow file's problem to report
            where = ("agents", by_name[name], "handler") if name in by_name else ("steps",)
            problems.add(where, f"cannot load handler of agent '{name}': {type(err).__name__}: {err}")


def load_flow_file(path: str | Path, *, trusted: bool = True) -> LoadedFlow:
    path = Path(path)
    data, tree = load_document(path)  # size, encoding, YAML aliases and nesting checked (reading.py)
    return parse_flow(data, str(path), tree, path.resolve(), trusted=trusted)


def resolve_agents(spec: FlowSpec, problems: _Problems) -> dict[str, AgentSpec]:
    for i, module in enumerate(spec.imports):
        if not problems.trusted and not module.startswith(
            "ensemble."
        ):  # Ensemble's own bundled modules are installed code
            problems.not_checked(("imports", i), f"module '{module}' not imported (validate --import imports it)")
            continue
        try:
            importlib.import_module(module)
            if problems.trusted:
                deploy_module(module)
        except Exception as err:  # any import failure is the flow file's problem to report
            problems.add(("imports", i), f"cannot import module '{module}': {type(err).__name__}: {err}")
    inline = {a.name: a for a in spec.agents}
    agents: dict[str, AgentSpec] = {}
    refs: dict[str, tuple[Any, ...]] = {}
    skipped: set[str] = set()
    for path, step in _steps_with_loc(spec.steps, ("steps",)):
        for rel, name in agent_refs(step):
            refs.setdefault(name, (*path, *rel))
            found = agents.get(name) or inline.get(name) or get_agent(name)
            if found is None and not problems.trusted and problems.unchecked:
                problems.not_checked(
                    (*path, *rel), f"agent '{name}' not checked: it would come from an imported module"
                )
                skipped.add(name)
            elif found is None:
                problems.add(
                    (*path, *rel),
                    f"unknown agent '{name}': define it under 'agents' or import its module under 'imports'",
                )
            else:
                agents[name] = found.model_copy(deep=True)  # a flow never shares the registry's objects
    for i, tool in enumerate(spec.tools):
        if tool.kind != "function" or tool.input_schema is not None or is_deployed(tool.handler or ""):
            continue
        if not problems.trusted:  # a tool's handler is not imported to read its signature
            problems.not_checked(("tools", i, "handler"), f"tool handler '{tool.handler}' not imported")
            tool.input_schema = {"type": "object"}
            continue
        try:
            deploy_handler(tool.handler or "")  # a flow this process loads on purpose: its tools are deployed
        except Exception as err:  # an unimportable handler is the flow file's problem to report
            problems.add(
                ("tools", i, "handler"), f"cannot load tool handler '{tool.handler}': {type(err).__name__}: {err}"
            )
            tool.input_schema = {"type": "object"}
    llm = spec.llm
    spec.llm = {k: v for k, v in llm.items() if k not in skipped}

    def report(loc: tuple[Any, ...], message: str) -> None:
        if not problems.trusted and problems.unchecked and "unknown tool" in message:  # may be registered by an import
            problems.not_checked(loc, f"{message.split(':')[0]} (not checked: it may come from an imported module)")
        else:
            problems.add(loc, message)

    attach_to_agents(spec, agents, refs, report)  # tool declarations and llm: sections (ensemble/tools.py)
    spec.llm = llm
    return agents


def _model_schema(path: str, problems: _Problems) -> dict[str, Any] | None:
    if not problems.trusted and not is_deployed(path) and not path.startswith("ensemble."):
        problems.not_checked(("input_schema",), f"model '{path}' not imported")
        return None
    try:
        model = deploy_handler(path)
        return model.model_json_schema()
    except Exception as err:  # an unimportable or non-model path is the flow file's problem
        problems.add(("input_schema",), f"cannot use '{path}' as a schema: {type(err).__name__}: {err}")
        return None


def _steps_with_loc(steps: list[Any], loc: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Any]]:
    for i, step in enumerate(steps):
        yield from _step_tree(step, (*loc, i))


def _step_tree(step: Any, loc: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Any]]:
    yield loc, step
    for rel, child in child_steps(step):
        yield from _step_tree(child, (*loc, *rel))


def check_flow(loaded: LoadedFlow, problems: _Problems) -> None:
    """Checks beyond the schema: unique step names, references to state keys that exist."""
    spec = loaded.spec
    written = {"input", *spec.state}
    for loc, step in _steps_with_loc(spec.steps, ("steps",)):
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
    for loc, step in _steps_with_loc(spec.steps, ("steps",)):
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

    shapes = _output_shapes(loaded, problems)

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

    for loc, step in _steps_with_loc(spec.steps, ("steps",)):
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


def _output_shapes(loaded: LoadedFlow, problems: _Problems) -> dict[str, tuple[str, dict[str, Any]]]:
    """State keys written by agent steps whose agent declares an output model: key -> (agent, the
    JSON schema of what lands there)."""
    shapes: dict[str, tuple[str, dict[str, Any]]] = {}
    for loc, step in _steps_with_loc(loaded.spec.steps, ("steps",)):
        agent = loaded.agents.get(step.agent) if isinstance(step, AgentStep) else None
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


# ---------------------------------------------------------------- discovery


def _flow_dirs() -> list[Path]:
    dirs = [EXAMPLES_DIR]
    dirs += [Path(p) for p in os.environ.get("ENSEMBLE_FLOW_PATH", "").split(os.pathsep) if p]
    return dirs


def import_flow_modules() -> None:
    for module in filter(None, (m.strip() for m in os.environ.get("ENSEMBLE_FLOW_MODULES", "").split(","))):
        try:
            importlib.import_module(module)
            deploy_module(module)
        except Exception as err:
            raise InputError(f"ENSEMBLE_FLOW_MODULES: cannot import '{module}': {type(err).__name__}: {err}") from None


def _flow_files() -> Iterator[Path]:
    for base in _flow_dirs():
        if not base.is_dir():
            continue
        for pattern in ("*/flow.yaml", "*/flow.yml", "*/flow.json", "*.flow.yaml", "*.flow.yml", "*.flow.json"):
            yield from sorted(base.glob(pattern))


def _name_in_file(path: Path) -> str | None:
    """The flow name a file declares; for a file that does not parse, the name its place implies
    (so asking for it by name reports the file's own error)."""
    try:
        data, _ = load_document(path)
    except InputError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("name"), str):
        return data["name"]
    return path.parent.name if path.stem == "flow" else path.name.split(".flow.")[0]


def all_flows() -> list[LoadedFlow]:
    """Every bundled and registered flow (a file that fails validation is reported, not skipped)."""
    import_flow_modules()
    found: dict[str, LoadedFlow] = {}
    for name, spec in _PY_FLOWS.items():  # the same precedence as find_flow: Python, then files in path order
        found[name] = parse_flow(spec.model_dump(), f"flow '{name}'")
    for path in _flow_files():
        flow = load_flow_file(path)
        found.setdefault(flow.spec.name, flow)
    return [found[k] for k in sorted(found)]


def find_flow(name_or_path: str) -> LoadedFlow:
    """A flow by registered name or by flow-file path."""
    import_flow_modules()
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml", ".json") or os.sep in name_or_path:
        if not path.exists():
            raise InputError(f"flow file not found: {name_or_path}")
        return load_flow_file(path)
    if name_or_path in _PY_FLOWS:
        return parse_flow(_PY_FLOWS[name_or_path].model_dump(), f"flow '{name_or_path}'")
    names = []
    for file in _flow_files():
        name = _name_in_file(file)
        if name == name_or_path:
            return load_flow_file(file)
        if name:
            names.append(name)
    known = ", ".join(sorted({*names, *_PY_FLOWS})) or "none"
    raise InputError(f"unknown flow '{name_or_path}' (known flows: {known}; or give a flow file path)")
