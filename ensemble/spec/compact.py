"""Agent specs written compact into a run's start event, with the defaults of a frozen version.

A run request records every agent the run uses, and a replay decodes it, perhaps years later,
with the code of that day. Leaving out the fields at their defaults saves most of those bytes, but
only if the values left out come back as they were when the run started, not as whatever the
defaults are by then. So a compact agent names the version of the defaults it was written with
(`"~": 1`), and `expand` fills it in from that version's table, frozen here, never from the
models. `DEFAULTS[LATEST]` must equal the models' defaults (`derive(AgentSpec)`; a unit test says
so): a release that changes a default adds a version and writes with it, and every version ever
written stays readable. An agent without the marker is in the full shape and reads as it is.

Within one request the agents are recorded by name, and a compact agent leaves out its name (the
key says it). Agents of one flow are often alike (the same model, instructions, timeouts), so an
agent may be written as the changes to an agent recorded before it in the same request
(`{"^": "m1", "llm": {"prompt": "..."}}`): keys whose values differ, mappings changed key by key,
and the keys it does not have under `"-"`. It is written so only where that is shorter, and only
after reading the changes back gives the agent exactly (`_reads_back`), so no value can be misread as
a change marker.
"""

from __future__ import annotations

import copy
import json
import typing
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, PlainSerializer
from pydantic_core import to_jsonable_python

from ensemble.spec.agent import AgentSpec

MARK = "~"  # the key that holds a compact agent's defaults version
BASE = "^"  # a compact agent written as the changes to this agent, recorded before it in the same request
GONE = "-"  # in such changes: the keys the earlier agent has and this one does not
_BASES = 8  # how many of the agents recorded just before one are tried as its base

# A table: the fields at their defaults ("defaults"), and the fields that hold another model,
# one ("one") or a list of them ("many"), with that model's table.
Table = dict[str, Any]

_RETRY_1: Table = {
    "defaults": {
        "initial_interval_s": 1.0,
        "backoff_coefficient": 2.0,
        "max_interval_s": 30.0,
        "max_attempts": 3,
        "non_retryable_errors": [],
    },
}
_LLM_1: Table = {
    "defaults": {
        "instructions": "",
        "prompt": None,
        "output_model": None,
        "max_tool_turns": 8,
        "max_reasks": 2,
        "temperature": None,
        "max_tokens": 2048,
    },
}
_TOOL_APPROVAL_1: Table = {"defaults": {"quorum": 1, "timeout": None}}
_TOOL_1: Table = {
    "defaults": {
        "description": "",
        "kind": "function",
        "handler": None,
        "server": None,
        "remote": None,
        "approval": None,
        "url": None,
        "headers": {},
        "input_schema": None,
        "effect": "read",
        "timeout_s": 30.0,
    },
    "one": {"approval": _TOOL_APPROVAL_1},
}
_AGENT_1: Table = {
    "defaults": {
        "description": "",
        "role": "",
        "kind": "function",
        "handler": None,
        "url": None,
        "headers": {},
        "input_schema": None,
        "output_schema": None,
        "timeout_s": 60.0,
        "schedule_to_close_s": None,
        "heartbeat_s": None,
        "retry": {
            "initial_interval_s": 1.0,
            "backoff_coefficient": 2.0,
            "max_interval_s": 30.0,
            "max_attempts": 3,
            "non_retryable_errors": [],
        },
        "tools": [],
        "effect": "read",
        "task_queue": None,
        "model": None,
        "llm": None,
        "tool_specs": [],
        "fast": False,
    },
    "one": {"retry": _RETRY_1, "llm": _LLM_1},
    "many": {"tool_specs": _TOOL_1},
}

DEFAULTS: dict[int, Table] = {1: _AGENT_1}
LATEST = max(DEFAULTS)


def compact(spec: BaseModel) -> dict[str, Any]:
    """An agent spec as a run request records it: its fields that differ from the defaults, and
    the defaults' version."""
    return {MARK: LATEST, **spec.model_dump(mode="json", exclude_defaults=True)}


def expand(data: Any) -> Any:
    """A recorded agent in the full shape: a compact one filled in from its version's frozen
    defaults; anything else as it is (the full shape, or what validation then refuses)."""
    if not isinstance(data, dict) or MARK not in data:
        return data
    rest = {k: v for k, v in data.items() if k != MARK}
    table = DEFAULTS.get(data[MARK]) if isinstance(data[MARK], int) else None
    if table is None:
        raise ValueError(
            f"an agent recorded with defaults version {data[MARK]!r}, which this release does not know "
            f"(it knows {', '.join(map(str, DEFAULTS))}): run it on a worker of the release that started it"
        )
    return _fill(table, rest)


def _expand_all(agents: Any) -> Any:
    if not isinstance(agents, dict):
        return agents
    written: dict[str, Any] = {}  # each agent as its own compact form, once its changes are applied
    out: dict[str, Any] = {}
    for name, spec in agents.items():
        if isinstance(spec, dict) and BASE in spec:
            base = written.get(spec[BASE]) if isinstance(spec[BASE], str) else None
            if not isinstance(base, dict):
                raise ValueError(
                    f"agent {name!r} is recorded as the changes to agent {spec[BASE]!r}, "
                    "which is not recorded before it in the same request"
                )
            spec = _apply(base, {k: v for k, v in spec.items() if k != BASE})
        written[name] = spec
        if isinstance(spec, dict) and MARK in spec and "name" not in spec:
            spec = {**spec, "name": name}  # a compact agent's name is its key
        out[name] = expand(spec)
    return out


def _compact_all(agents: dict[str, AgentSpec]) -> dict[str, Any]:
    written: dict[str, dict[str, Any]] = {}
    out: dict[str, Any] = {}
    for name, spec in agents.items():
        own = compact(spec)
        if own.get("name") == name:
            del own["name"]
        out[name] = _shortest(own, written)
        written[name] = own
    return out


def _shortest(own: dict[str, Any], written: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`own`, or the changes to one of the agents recorded just before it where shorter and
    reading them back gives `own` exactly."""
    candidates = []
    for base_name in list(written)[-_BASES:]:
        candidate = {BASE: base_name, **_changes(written[base_name], own)}
        candidates.append((_size(candidate), base_name, candidate))
    own_size = _size(own)
    for size, base_name, candidate in sorted(candidates, key=lambda c: c[0]):
        if size >= own_size:
            break
        changes = {k: v for k, v in candidate.items() if k != BASE}
        if _reads_back(written[base_name], changes, own):
            return candidate
    return own


def _size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values: 1, 1.0 and true are equal in Python, not to a reader."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_json(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _changes(base: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    gone = [key for key in base if key not in own]
    if gone:
        out[GONE] = gone
    for key, value in own.items():
        if key in base and same_json(base[key], value):
            continue
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = _changes(base[key], value)
        else:
            out[key] = value
    return out


def _reads_back(base: dict[str, Any], changes: dict[str, Any], own: dict[str, Any]) -> bool:
    """Whether applying `changes` to `base` gives `own` exactly (not where a value of its own
    uses a change marker's key)."""
    try:
        back = _apply(base, changes)
    except (TypeError, ValueError):
        return False
    return same_json(back, own)


def _apply(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    gone = changes.get(GONE, [])
    if not isinstance(gone, list):
        raise ValueError(f"an agent's changes name the keys it drops as {gone!r}, not as a list")
    out = {key: copy.deepcopy(value) for key, value in base.items() if key not in gone}
    for key, value in changes.items():
        if key == GONE:
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _apply(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# Agents by name, as a run request (or a group chat's input) records them: written compact to JSON
# (what goes into a history), read back in either shape; in memory always full AgentSpecs.
Agents = Annotated[dict[str, AgentSpec], BeforeValidator(_expand_all), PlainSerializer(_compact_all, when_used="json")]


def _fill(table: Table, data: dict[str, Any]) -> dict[str, Any]:
    out = {k: copy.deepcopy(v) for k, v in table["defaults"].items() if k not in data}
    for key, value in data.items():
        if key in table.get("one", {}) and isinstance(value, dict):
            value = _fill(table["one"][key], value)
        elif key in table.get("many", {}) and isinstance(value, list):
            value = [_fill(table["many"][key], v) if isinstance(v, dict) else v for v in value]
        out[key] = value
    return out


def derive(model: type[BaseModel]) -> Table:
    """The table of `model`'s defaults as the code defines them today (for the unit test that
    keeps DEFAULTS[LATEST] equal to it, and to write a new version's table)."""
    table: Table = {"defaults": {}}
    hints = typing.get_type_hints(model)
    for name, field in model.model_fields.items():
        if not field.is_required():
            table["defaults"][name] = to_jsonable_python(field.get_default(call_default_factory=True))
        nested, many = _model_in(hints[name])
        if nested is not None:
            table.setdefault("many" if many else "one", {})[name] = derive(nested)
    return table


def _model_in(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model a field holds (directly, optionally, or as a list's items), and whether in a list."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list and args:
        found, _ = _model_in(args[0])
        return found, True
    for arg in args:
        if arg is not type(None):
            found, many = _model_in(arg)
            if found is not None:
                return found, many
    return None, False
