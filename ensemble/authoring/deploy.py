"""What a worker is deployed with: the flows and modules whose code its runs may use
(docs/security.md, "Only deployed code runs").

The bundled flows, flow files in ENSEMBLE_FLOW_PATH, modules in ENSEMBLE_FLOW_MODULES, and the
explicit allow-list ENSEMBLE_FLOWS / `worker.py --flows`: flow files, directories of flows, or
modules, comma-separated. Loading them registers their agents, tools and models in this process;
a run's request can name only those."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from ensemble.authoring.agents import deploy_module
from ensemble.authoring.flows import all_flows, deployed, load_flow_file
from ensemble.spec.errors import InputError

FLOWS_ENV = "ENSEMBLE_FLOWS"
_FLOW_PATTERNS = ("*/flow.yaml", "*/flow.yml", "*/flow.json", "*.flow.yaml", "*.flow.yml", "*.flow.json")
_loaded = False


def load_entry(entry: str) -> None:
    """One allow-list entry: a flow file, a directory of flows, or a module."""
    path = Path(entry)
    if path.is_dir():
        for pattern in _FLOW_PATTERNS:
            for file in sorted(path.glob(pattern)):
                deployed(load_flow_file(file))
    elif path.suffix in (".yaml", ".yml", ".json") or os.sep in entry:
        if not path.exists():
            raise InputError(f"{FLOWS_ENV}/--flows: flow file not found: {entry}")
        deployed(load_flow_file(path))
    else:
        try:
            importlib.import_module(entry)
        except Exception as err:
            raise InputError(f"{FLOWS_ENV}/--flows: cannot import '{entry}': {type(err).__name__}: {err}") from None
        deploy_module(entry)


def load_worker_flows() -> None:
    """Everything a worker runs; the bundled and discovered flows once per process, the allow-list
    each time (a later worker in the same process may be given more)."""
    global _loaded
    for entry in (e.strip() for e in os.environ.get(FLOWS_ENV, "").split(",")):
        if entry:
            load_entry(entry)
    if not _loaded:
        all_flows()
        _loaded = True
