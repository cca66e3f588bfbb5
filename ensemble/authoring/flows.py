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
from ensemble.authoring.checks import check_flow, steps_with_loc
from ensemble.authoring.problems import Problems, plain_message, strip_tags
from ensemble.authoring.reading import load_document
from ensemble.authoring.tools import attach_to_agents, deploy_mcp_server
from ensemble.spec import (
    AgentSpec,
    ChatStep,
    FlowSpec,
    GateStep,
    ParallelStep,
    RunRequest,
    SequenceStep,
    SupervisorStep,
    agent_refs,
    child_steps,
    versions,
)
from ensemble.spec.errors import InputError
from ensemble.spec.run import flow_version

EXAMPLES_DIR = (Path(__file__).resolve().parent.parent / "examples").resolve()  # bundled with the package
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
    version: str | None = None  # the digest its runs name, for a flow found by name (`deployed`)

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


def deployed(loaded: LoadedFlow) -> LoadedFlow:
    """A flow this process found by name (bundled, in ENSEMBLE_FLOW_PATH or ENSEMBLE_FLOW_MODULES,
    registered in Python, or a worker's ENSEMBLE_FLOWS): its version is known here, so a run of
    it may name the version instead of carrying the flow (ensemble.spec.versions)."""
    loaded.version = versions.remember(flow_version(RunRequest(flow=loaded.spec, agents=loaded.agents)))
    return loaded


def register_flow(spec: FlowSpec) -> FlowSpec:
    """Make a flow defined in Python runnable by name."""
    _PY_FLOWS[spec.name] = spec
    return spec


def walk_steps(steps: list[Any]) -> Iterator[Any]:
    """Every step, depth first, in declaration order."""
    for _, step in steps_with_loc(steps, ()):
        yield step


# ---------------------------------------------------------------- loading


def parse_flow(
    data: Any, where: str, tree: yaml.Node | None = None, base: Path | None = None, *, trusted: bool = True
) -> LoadedFlow:
    """Validate flow data (already parsed) and resolve its agents. `trusted=False` imports
    nothing (validating a file someone else wrote) and lists what it could not check."""
    problems = Problems(where, tree)
    problems.trusted = trusted
    if not isinstance(data, dict):
        problems.add((), "a flow file holds a mapping with at least 'name' and 'steps'")
        problems.raise_if_any()
    try:
        spec = FlowSpec.model_validate(data)
    except ValidationError as err:
        for e in err.errors():
            problems.add(strip_tags(tuple(e["loc"])), plain_message(e["msg"]))
        problems.raise_if_any()
        raise  # unreachable
    agents = resolve_agents(spec, problems)
    if isinstance(spec.input_schema, str):
        spec.input_schema = _model_schema(spec.input_schema, problems)
    loaded = LoadedFlow(spec=spec, agents=agents, source=base, unchecked=problems.unchecked)
    check_flow(loaded.spec, loaded.agents, problems)
    problems.raise_if_any()
    if trusted:
        _deploy(loaded, problems)
        problems.raise_if_any()
    return loaded


def _deploy(loaded: LoadedFlow, problems: Problems) -> None:
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


def resolve_agents(spec: FlowSpec, problems: Problems) -> dict[str, AgentSpec]:
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
    for path, step in steps_with_loc(spec.steps, ("steps",)):
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


def _model_schema(path: str, problems: Problems) -> dict[str, Any] | None:
    if not problems.trusted and not is_deployed(path) and not path.startswith("ensemble."):
        problems.not_checked(("input_schema",), f"model '{path}' not imported")
        return None
    try:
        model = deploy_handler(path)
        return model.model_json_schema()
    except Exception as err:  # an unimportable or non-model path is the flow file's problem
        problems.add(("input_schema",), f"cannot use '{path}' as a schema: {type(err).__name__}: {err}")
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
    return [deployed(found[k]) for k in sorted(found)]


def find_flow(name_or_path: str) -> LoadedFlow:
    """A flow by registered name or by flow-file path."""
    import_flow_modules()
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml", ".json") or os.sep in name_or_path:
        if not path.exists():
            raise InputError(f"flow file not found: {name_or_path}")
        return load_flow_file(path)
    if name_or_path in _PY_FLOWS:
        return deployed(parse_flow(_PY_FLOWS[name_or_path].model_dump(), f"flow '{name_or_path}'"))
    names = []
    for file in _flow_files():
        name = _name_in_file(file)
        if name == name_or_path:
            return deployed(load_flow_file(file))
        if name:
            names.append(name)
    known = ", ".join(sorted({*names, *_PY_FLOWS})) or "none"
    raise InputError(f"unknown flow '{name_or_path}' (known flows: {known}; or give a flow file path)")
