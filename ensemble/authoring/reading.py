"""Reading flow files safely: bounded size, UTF-8 only, YAML without alias bombs, bounded nesting.

Every refusal is an `InputError` of one line naming the file (and its line when known), so a bad
file is exit code 2 with a message a person can act on, never a traceback or a long stall.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from ensemble.spec.errors import InputError

MAX_FLOW_BYTES = 1024 * 1024  # a flow file describes steps; documents go in a run's input
MAX_DEPTH = 64  # nesting of mappings and lists, in flow files and in a run's input
MAX_NODES = 100_000  # values in a flow file once its YAML aliases are expanded
MAX_ALIASES = 1000


def one_line(text: str, limit: int = 400) -> str:
    """`text` on one line (runs of whitespace become one space), at most `limit` characters."""
    flat = re.sub(r"\s+", " ", str(text)).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def decode(raw: bytes, where: str) -> str:
    """UTF-8 text of a file, or one line saying where it is not UTF-8."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        bad = raw[err.start : err.start + 1].hex()
        raise InputError(
            f"{where}:{line}: not UTF-8 text (byte 0x{bad} at offset {err.start}); save the file as UTF-8"
        ) from None


def read_text(path: Path, what: str = "flow file", limit: int = MAX_FLOW_BYTES) -> str:
    where = str(path)
    try:
        size = path.stat().st_size
        if size > limit:
            raise InputError(
                f"{where}: the {what} is {size / 2**20:.1f} MiB; a {what} must be under {limit / 2**20:.0f} MiB"
            )
        with open(path, "rb") as fh:
            raw = fh.read(limit + 1)
    except OSError as err:
        raise InputError(f"{where}: cannot read {what}: {err.strerror or err}") from None
    if len(raw) > limit:
        raise InputError(f"{where}: the {what} is over {limit / 2**20:.0f} MiB; a {what} must be under that")
    return decode(raw, where)


class _Refused(yaml.YAMLError):
    def __init__(self, message: str, mark: Any = None) -> None:
        super().__init__(message)
        self.problem, self.problem_mark = message, mark


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses more than MAX_ALIASES aliases, or nesting deeper than
    MAX_DEPTH, while composing (before anything is expanded or recursed into)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases = 0
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise _Refused(
                    f"more than {MAX_ALIASES} YAML aliases; a flow file needs few, if any", self.peek_event().start_mark
                )
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH + 1:
                raise _Refused(f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_tree(root: yaml.Node) -> None:
    """Refuse a composed YAML graph that expands too far (alias bombs), nests too deep, or refers
    to itself. Each shared node's expansion is counted once (memoised): linear in the file."""
    sizes: dict[int, int] = {}
    on_path = {id(root)}
    stack = [(root, iter(_children(root)))]
    while stack:
        node, pending = stack[-1]
        child = next(pending, None)
        if child is not None:
            key = id(child)
            if key in sizes:
                continue
            if key in on_path:
                raise _Refused("a YAML alias refers to the node that contains it", child.start_mark)
            if len(stack) > MAX_DEPTH:
                raise _Refused(f"nested more than {MAX_DEPTH} levels deep", child.start_mark)
            on_path.add(key)
            stack.append((child, iter(_children(child))))
            continue
        stack.pop()
        on_path.discard(id(node))
        sizes[id(node)] = 1 + sum(sizes[id(c)] for c in _children(node))
        if sizes[id(node)] > MAX_NODES:
            raise _Refused(
                f"the document expands to more than {MAX_NODES} values (YAML aliases?); refused", node.start_mark
            )


def yaml_error(err: yaml.YAMLError, where: str, text: str = "") -> InputError:
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    line = f":{mark.line + 1}" if mark is not None else ""
    if isinstance(err, yaml.reader.ReaderError):
        where = f"{where}:{text[: err.position].count(chr(10)) + 1}" if text else where
        where_ = f"{where}: not valid YAML: {one_line(str(err.reason))}"
        return InputError(f"{where_} (character {err.character!r} at offset {err.position})")
    problem = getattr(err, "problem", None) or str(err)
    context = getattr(err, "context", None)
    text = f"{problem} ({context})" if context and context not in problem else problem
    return InputError(f"{where}{line}: not valid YAML: {one_line(text)}")


def parse_yaml(text: str, where: str) -> tuple[Any, yaml.Node | None]:
    """Data and composed tree of one YAML document, within the limits above."""
    loader = None
    try:
        loader = BoundedLoader(text)  # its reader refuses control characters at once
        tree = loader.get_single_node()
        if tree is None:
            return None, None
        _check_tree(tree)
        return loader.construct_document(tree), tree
    except yaml.YAMLError as err:
        raise yaml_error(err, where, text) from None
    except RecursionError:
        raise InputError(f"{where}: nested too deeply to read (over {MAX_DEPTH} levels)") from None
    finally:
        if loader is not None:
            loader.dispose()


def depth_of(value: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of parsed data (lists and mappings), counting no further than `limit` + 1."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            items = list(item.values())
        elif isinstance(item, (list, tuple)):
            items = list(item)
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((i, depth + 1) for i in items)
    return deepest


def parse_json(text: str, where: str) -> Any:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{where}:{err.lineno}: not valid JSON: {err.msg}") from None
    except RecursionError:
        raise InputError(f"{where}: nested too deeply to read (over {MAX_DEPTH} levels)") from None
    if depth_of(data) > MAX_DEPTH:
        raise InputError(f"{where}: nested more than {MAX_DEPTH} levels deep")
    return data


def load_document(path: Path) -> tuple[Any, yaml.Node | None]:
    """A flow file's data (and its YAML tree, for line numbers), within every limit above."""
    text = read_text(path)
    if path.suffix == ".json":
        return parse_json(text, str(path)), None
    return parse_yaml(text, str(path))
