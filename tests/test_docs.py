"""The documentation's Python examples name what exists: every `import` of Ensemble (or of a
module the project ships) in a ```python block of README.md or docs/ resolves, and every name it
imports from such a module is there."""

from __future__ import annotations

import ast
import importlib
import re
import textwrap

import pytest

from tests.conftest import ROOT

OURS = ("ensemble", "bench", "examples", "activities", "workflows")
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _imports() -> list[tuple[str, str, str | None]]:
    """(where, module, name or None) for every import of one of OURS in a python block."""
    found = []
    for path in FILES:
        for i, block in enumerate(re.findall(r"```python\n(.*?)```", path.read_text(), re.S)):
            where = f"{path.relative_to(ROOT)} (python block {i + 1})"
            try:
                tree = ast.parse(textwrap.dedent(block))
            except SyntaxError as err:
                found.append((where, f"<syntax error: {err}>", None))
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in OURS:
                    found += [(where, node.module, alias.name) for alias in node.names]
                elif isinstance(node, ast.Import):
                    found += [(where, a.name, None) for a in node.names if a.name.split(".")[0] in OURS]
    return found


IMPORTS = _imports()


def test_the_docs_have_python_examples_that_import_ensemble():
    assert len({where for where, _, _ in IMPORTS}) >= 5


@pytest.mark.parametrize(("where", "module", "name"), IMPORTS, ids=lambda x: str(x))
def test_every_documented_import_exists(where, module, name):
    assert not module.startswith("<syntax"), f"{where}: {module}"
    loaded = importlib.import_module(module)
    if name is not None and name != "*":
        assert hasattr(loaded, name) or importlib.util.find_spec(f"{module}.{name}") is not None, (
            f"{where}: `from {module} import {name}`: {module} has no {name}"
        )
