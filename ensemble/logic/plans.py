"""Plans a supervisor's planner returns, and their validation (pure: the workflow calls it)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from ensemble.spec import NAME_RE, Step, agent_refs, child_steps

STEP = TypeAdapter(Step)


class Subtask(BaseModel):
    """One delegated piece of work: an agent, or a whole step (a parallel vote, a sequence...)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=NAME_RE)
    agent: str | None = None
    step: dict[str, Any] | None = Field(
        None, description="a step of any kind; its templates read this subtask's input as $input"
    )
    input: Any = None
    depends_on: list[str] = Field(default_factory=list)
    for_each: str | None = Field(None, pattern=r"^\$", description="run the agent once per item of this list ($item)")

    @model_validator(mode="after")
    def _one_kind(self) -> Subtask:
        if (self.agent is None) == (self.step is None):
            raise ValueError("a subtask has either agent or step")
        if self.step is not None and self.for_each:
            raise ValueError("for_each goes with agent subtasks")
        return self

    def parsed_step(self) -> Any:
        """The subtask's step, named after the subtask."""
        return STEP.validate_python({**(self.step or {}), "name": self.id})

    def agents(self) -> list[str]:
        """Every agent this subtask runs."""
        if self.agent is not None:
            return [self.agent]
        names: list[str] = []
        pending = [self.parsed_step()]
        while pending:
            step = pending.pop(0)
            names += [n for _, n in agent_refs(step) if n not in names]
            pending += [c for _, c in child_steps(step)]
        return names


class Plan(BaseModel):
    model_config = ConfigDict(extra="ignore")

    subtasks: list[Subtask] = Field(min_length=1)
    rationale: str = ""


class PlanError(ValueError):
    """A plan the engine refuses to run; the message lists every problem."""


def validate_plan(data: Any, allowed: list[str], max_subtasks: int, max_depth: int) -> Plan:
    try:
        plan = Plan.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(plan)"
        raise PlanError(f"the plan is malformed at {where}: {first['msg']}") from None
    problems: list[str] = []
    ids = [s.id for s in plan.subtasks]
    if len(ids) > max_subtasks:
        problems.append(f"{len(ids)} subtasks, more than the {max_subtasks} allowed")
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        problems.append(f"subtask ids used twice: {', '.join(dupes)}")
    for s in plan.subtasks:
        try:
            used = s.agents()
        except ValidationError as err:
            first = err.errors()[0]
            problems.append(
                f"subtask '{s.id}': its step is malformed at {'.'.join(map(str, first['loc'])) or '(step)'}: {first['msg']}"
            )
            used = []
        for name in used:
            if name not in allowed:
                problems.append(f"subtask '{s.id}': agent '{name}' is not allowed here (allowed: {', '.join(allowed)})")
        for d in s.depends_on:
            if d not in ids:
                problems.append(f"subtask '{s.id}' depends on unknown subtask '{d}'")
    if not problems:
        cycle = _cycle(plan)
        if cycle:
            problems.append(f"dependency cycle: {' -> '.join(cycle)}")
        elif (depth := _depth(plan)) > max_depth:
            problems.append(f"dependency chain of {depth} subtasks, deeper than the {max_depth} allowed")
    if problems:
        raise PlanError("; ".join(problems))
    return plan


def _cycle(plan: Plan) -> list[str] | None:
    deps = {s.id: s.depends_on for s in plan.subtasks}
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node: str, trail: list[str]) -> list[str] | None:
        if state.get(node) == 1:
            return trail[trail.index(node) :] + [node]
        if state.get(node) == 2:
            return None
        state[node] = 1
        for d in deps[node]:
            found = visit(d, [*trail, node])
            if found:
                return found
        state[node] = 2
        return None

    for s in plan.subtasks:
        found = visit(s.id, [])
        if found:
            return found
    return None


def _depth(plan: Plan) -> int:
    deps = {s.id: s.depends_on for s in plan.subtasks}
    memo: dict[str, int] = {}

    def depth(node: str) -> int:
        if node not in memo:
            memo[node] = 1 + max((depth(d) for d in deps[node]), default=0)
        return memo[node]

    return max(depth(s.id) for s in plan.subtasks)


def sinks(plan: Plan) -> list[str]:
    """Subtasks nothing depends on, in plan order."""
    needed = {d for s in plan.subtasks for d in s.depends_on}
    return [s.id for s in plan.subtasks if s.id not in needed]
