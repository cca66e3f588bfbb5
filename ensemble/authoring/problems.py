"""Problems in a flow file, each with its place: `file:line: path: message`, every one collected
so that `validate` can list them all."""

from __future__ import annotations

from typing import Any

import yaml

from ensemble.authoring.reading import one_line
from ensemble.spec import STEP_KINDS
from ensemble.spec.errors import InputError

STEP_TAGS = set(STEP_KINDS)


def format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def strip_tags(loc: tuple[Any, ...]) -> tuple[Any, ...]:
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


class Problems:
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


def plain_message(msg: str) -> str:
    """A validation message as a person reads it: without pydantic's "Value error, " prefix."""
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg
