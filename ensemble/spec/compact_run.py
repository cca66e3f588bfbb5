"""Run requests written compact into a run's start event: the flow's steps and settings, and the
request's own fields, without the values at their defaults.

The same rule as for agents (ensemble.spec.compact): a replay decodes the start event perhaps years
later, so what is left out must come back exactly as it was written. The request is dumped in full
as before, then every value equal to its default in a frozen table is removed (`strip`), and the
request is marked with that table's version (`"~": 1`). Reading, `fill` puts back the values of the
version the request names, never the models' defaults of the day: `fill(v, strip(v, x)) == x` for
any table, so a table only decides how small a request gets, never what a run reads. A request
without the mark (the full shape, from earlier releases and the golden histories) reads as it is.

Tables are named (`TABLES[1]["FlowSpec"]`), because steps nest: a table lists its fields at their
defaults (`defaults`) and the fields holding another model, one (`one`), a list of them (`many`)
or a mapping of them (`each`), by table name; a tagged union (`@Step`) names its members by tag.
`TABLES[LATEST]` must equal `derive(RunRequest)` (a unit test says so): a release that changes a
default adds a version and writes with it; every version ever written stays readable.
"""

from __future__ import annotations

import copy
import typing
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from ensemble.spec.compact import MARK, same_json
from ensemble.spec.frozen import TABLES

LATEST = max(TABLES)
Tables = dict[str, dict[str, Any]]
ROOT = "RunRequest"


def _member(tables: Tables, name: str, data: dict[str, Any]) -> dict[str, Any] | None:
    table = tables.get(name)
    if table is None:
        return None
    if "union" in table:
        tag = next((t for t in table["union"] if t in data), None)
        return tables.get(table["union"][tag]) if tag is not None else None
    return table


def strip(tables: Tables, name: str, data: Any) -> Any:
    """`data` (a dumped model of table `name`) without the values at the table's defaults."""
    table = _member(tables, name, data) if isinstance(data, dict) else None
    if table is None:
        return data
    defaults = table.get("defaults", {})
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in defaults and same_json(value, defaults[key]):
            continue
        out[key] = _nested(tables, table, key, value, strip)
    return out


def fill(tables: Tables, name: str, data: Any) -> Any:
    """`data` as `strip` wrote it, with the table's defaults put back."""
    table = _member(tables, name, data) if isinstance(data, dict) else None
    if table is None:
        return data
    out = {k: copy.deepcopy(v) for k, v in table.get("defaults", {}).items() if k not in data}
    for key, value in data.items():
        out[key] = _nested(tables, table, key, value, fill)
    return out


def _nested(tables: Tables, table: dict[str, Any], key: str, value: Any, step: Any) -> Any:
    if key in table.get("one", {}):
        return step(tables, table["one"][key], value)
    if key in table.get("many", {}) and isinstance(value, list):
        return [step(tables, table["many"][key], v) for v in value]
    if key in table.get("each", {}) and isinstance(value, dict):
        return {k: step(tables, table["each"][key], v) for k, v in value.items()}
    return value


def compact(request: dict[str, Any]) -> dict[str, Any]:
    """A dumped run request as its start event records it."""
    return {MARK: LATEST, **strip(TABLES[LATEST], ROOT, request)}


def expand(data: Any) -> Any:
    """A recorded run request in the full shape (anything without the mark as it is)."""
    if not isinstance(data, dict) or MARK not in data:
        return data
    version = data[MARK]
    tables = TABLES.get(version) if isinstance(version, int) and not isinstance(version, bool) else None
    if tables is None:
        raise ValueError(
            f"a run request recorded with defaults version {version!r}, which this release does not know "
            f"(it knows {', '.join(map(str, TABLES))}): run it on a worker of the release that started it"
        )
    return fill(tables, ROOT, {k: v for k, v in data.items() if k != MARK})


# Deriving the tables from the models (the unit test, and writing a new version).


def derive(model: type[BaseModel], skip: tuple[str, ...] = ("RunRequest.agents",)) -> Tables:
    """The named tables of `model` and every model it holds, from the code of today. `skip`
    (`Model.field`) leaves a field's value as it is dumped (a run's resolved agents are compact
    already, by ensemble.spec.compact)."""
    tables: Tables = {}
    _derive(model, tables, skip, {})
    return tables


def _derive(model: type[BaseModel], tables: Tables, skip: tuple[str, ...], seen: dict[str, type]) -> str:
    name = model.__name__
    if name in tables:
        if seen.get(name) is not model:
            raise TypeError(f"two models named {name}: a table name must name one model")
        return name
    table: dict[str, Any] = {}
    tables[name], seen[name] = table, model  # before the fields: a model may hold itself through a union
    hints = typing.get_type_hints(model, include_extras=True)
    for field_name, field in model.model_fields.items():
        key = _key(field_name, field)
        if not field.is_required():
            table.setdefault("defaults", {})[key] = to_jsonable_python(field.get_default(call_default_factory=True))
        if f"{name}.{field_name}" in skip:
            continue
        found = _shape(hints[field_name], tables, skip, seen)
        if found is not None:
            table.setdefault(found[0], {})[key] = found[1]
    return name


def _key(name: str, field: FieldInfo) -> str:
    return field.serialization_alias or field.alias or name


def _shape(annotation: Any, tables: Tables, skip: tuple[str, ...], seen: dict[str, type]) -> tuple[str, str] | None:
    """("one" | "many" | "each", table name) for a field that holds models, else None."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is typing.Annotated:
        return _shape(args[0], tables, skip, seen)
    if origin is list and args:
        inner = _shape(args[0], tables, skip, seen)
        return ("many", inner[1]) if inner is not None and inner[0] == "one" else None
    if origin is dict and len(args) == 2:
        inner = _shape(args[1], tables, skip, seen)
        return ("each", inner[1]) if inner is not None and inner[0] == "one" else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return ("one", _derive(annotation, tables, skip, seen))
    members = [a for a in args if a is not type(None)]
    tagged = [_tag(a) for a in members]
    if len(members) > 1 and all(t is not None for t in tagged):
        union: dict[str, str] = {}
        for tag, member in zip(tagged, members, strict=True):
            assert tag is not None
            union[tag] = _derive(get_args(member)[0], tables, skip, seen)
        name = "@" + "|".join(union)
        tables[name] = {"union": union}
        return ("one", name)
    for member in members:
        found = _shape(member, tables, skip, seen)
        if found is not None:
            return found
    return None


def _tag(annotation: Any) -> str | None:
    """The tag of an `Annotated[Model, Tag("x")]` union member."""
    if get_origin(annotation) is not typing.Annotated:
        return None
    for meta in get_args(annotation)[1:]:
        tag = getattr(meta, "tag", None)
        if isinstance(tag, str):
            return tag
    return None
