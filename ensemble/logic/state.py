"""The run state: reducers that combine writes, and templates that read from it.

Pure functions only: the workflow calls them, so they must be deterministic and do no I/O.

Templates: a string starting with `$` is a reference into the state: `$input.text`,
`$fields.total.value`, `$items.0` (list index), `$items.*.name` (that field of every item), or
`$` for the whole state. A trailing `?`
makes a reference optional (`$input.filename?` is null when absent). `$$` escapes a literal dollar. Dicts and lists are resolved element by element; anything else is a literal.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from ensemble.spec import Reducer, StateKey


class StateError(ValueError):
    """A template or a write that cannot be applied to the state."""


def apply_reducer(reducer: Reducer, current: Any, value: Any, key: str = "?") -> Any:
    """Combine `value` into `current` under `reducer`; returns the new value."""
    if reducer == "replace":
        return value
    if reducer == "append":
        return [*(current or []), value]
    if reducer == "extend":
        if not isinstance(value, list):
            raise StateError(f"state key '{key}' extends lists, got {type(value).__name__}")
        return [*(current or []), *value]
    if reducer == "merge":
        if not isinstance(value, dict) or not isinstance(current or {}, dict):
            raise StateError(f"state key '{key}' merges objects, got {type(value).__name__}")
        return deep_merge(current or {}, value)
    if reducer == "add":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise StateError(f"state key '{key}' adds numbers, got {type(value).__name__}")
        return (current or 0) + value
    raise StateError(f"unknown reducer {reducer!r}")


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


class RunState:
    """The typed run state of one run: declared keys with reducers, plus the run's input."""

    def __init__(self, declared: Mapping[str, StateKey], run_input: Any) -> None:
        self._declared = dict(declared)
        self.values: dict[str, Any] = {k: copy.deepcopy(s.default) for k, s in declared.items()}
        self.values["input"] = run_input
        self.journal: list[tuple[str, Any]] | None = None  # the writes of a forked (branch) state

    def reducer_of(self, key: str) -> Reducer:
        spec = self._declared.get(key)
        return spec.reducer if spec else "replace"

    def combines(self, key: str) -> bool:
        """Whether concurrent writes to `key` combine (a declared reducer other than replace)."""
        return self.reducer_of(key) != "replace"

    def write(self, key: str, value: Any, shared: bool = True) -> None:
        """Write through the key's reducer. In a branch, only `shared` writes (a step's explicit
        `output`) are journaled for the parent; the others stay local to the branch."""
        if key == "input":
            raise StateError("state key 'input' is read-only")
        self.values[key] = apply_reducer(self.reducer_of(key), self.values.get(key), value, key)
        if self.journal is not None and shared:
            self.journal.append((key, copy.deepcopy(value)))

    def fork(self, local: Mapping[str, Any]) -> RunState:
        """A branch's own copy: reads see this state plus `local` keys; writes are journaled."""
        branch = RunState.__new__(RunState)
        branch._declared = self._declared
        branch.values = {**copy.deepcopy(self.values), **copy.deepcopy(dict(local))}
        branch.journal = []
        return branch

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self.values)


def lookup(data: Any, path: str) -> Any:
    """Follow a dotted path (`a.b.0.c`) through dicts and lists; `*` maps the rest of the path
    over every item of a list (`clauses.*.title`)."""
    current = data
    walked: list[str] = []
    parts = [p for p in path.split(".") if p]
    for n, part in enumerate(parts):
        if part == "*":
            if not isinstance(current, list):
                raise StateError(f"'${'.'.join(walked)}' is not a list, so '*' cannot follow it")
            rest = ".".join(parts[n + 1 :])
            return [lookup(item, rest) for item in current]
        walked.append(part)
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.lstrip("-").isdigit() and -len(current) <= int(part) < len(current):
            current = current[int(part)]
        else:
            raise StateError(f"'${'.'.join(walked)}' is not in the run state")
    return current


def resolve(template: Any, state: Mapping[str, Any]) -> Any:
    """Resolve a template against the state (see module docstring)."""
    if isinstance(template, str):
        if template.startswith("$$"):
            return template[1:]
        if template.startswith("$"):
            if template.endswith("?"):
                try:
                    return copy.deepcopy(lookup(state, template[1:-1]))
                except StateError:
                    return None
            return copy.deepcopy(lookup(state, template[1:]))
        return template
    if isinstance(template, dict):
        return {k: resolve(v, state) for k, v in template.items()}
    if isinstance(template, list):
        return [resolve(v, state) for v in template]
    return template


def references(template: Any) -> Iterable[str]:
    """The state keys a template reads (first path segment of each reference)."""
    if isinstance(template, str) and template.startswith("$") and not template.startswith("$$"):
        head = template[1:].rstrip("?").split(".", 1)[0]
        yield head or "$"
    elif isinstance(template, dict):
        for v in template.values():
            yield from references(v)
    elif isinstance(template, list):
        for v in template:
            yield from references(v)


def reference_paths(template: Any) -> Iterable[str]:
    """Every path a template reads, whole (`$greeting.text?` -> `greeting.text`)."""
    if isinstance(template, str) and template.startswith("$") and not template.startswith("$$"):
        yield template[1:].rstrip("?")
    elif isinstance(template, dict):
        for v in template.values():
            yield from reference_paths(v)
    elif isinstance(template, list):
        for v in template:
            yield from reference_paths(v)


def output_writes(output: str | dict[str, str] | None, default_key: str, value: Any) -> list[tuple[str, Any]]:
    """The (state key, value) writes of a step's output spec."""
    if output is None:
        return [(default_key, value)]
    if isinstance(output, str):
        return [(output, value)]
    writes = []
    for key, path in output.items():
        path = path[1:] if path.startswith("$") else path
        try:
            writes.append((key, copy.deepcopy(lookup(value, path)) if path else value))
        except StateError:
            raise StateError(f"output '{key}: {path}': '{path}' is not in the agent's output") from None
    return writes
