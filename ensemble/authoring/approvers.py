"""Approver configuration: groups of people who may decide on gates.

The file is YAML, `groups: {NAME: [user, ...]}`, found at $ENSEMBLE_APPROVERS (`worker.py
--approvers FILE` sets it), else the bundled examples/approvers.yaml: never a file in the worker's
working directory. It is read on the worker when a gate's tier opens, and what it resolved is
recorded in the run's history.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from ensemble.spec import GROUP_PREFIX
from ensemble.spec.errors import InputError

BUNDLED = (Path(__file__).resolve().parent.parent / "examples" / "approvers.yaml").resolve()


def config_path() -> Path:
    if os.environ.get("ENSEMBLE_APPROVERS"):
        return Path(os.environ["ENSEMBLE_APPROVERS"]).resolve()
    return BUNDLED


def load_groups(path: Path | None = None) -> dict[str, list[str]]:
    path = path or config_path()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise InputError(f"cannot read the approvers file {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise InputError(f"{where}: the approvers file is not valid YAML") from None
    groups = data.get("groups", {}) if isinstance(data, dict) else None
    if not isinstance(groups, dict) or not all(
        isinstance(members, list) and all(isinstance(m, str) for m in members) for members in groups.values()
    ):
        raise InputError(f"{path}: the approvers file needs `groups: {{NAME: [user, ...]}}`")
    return {str(name): list(members) for name, members in groups.items()}


def tier_groups(approvers: list[str], groups: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """The groups a tier names, with their members."""
    groups = load_groups() if groups is None else groups
    names = [a[len(GROUP_PREFIX) :] for a in approvers if a.startswith(GROUP_PREFIX)]
    return {n: list(groups.get(n, [])) for n in names}


def resolve(approvers: list[str], groups: dict[str, list[str]] | None = None) -> list[str]:
    """The people named by users and `group:NAME` entries, in first-mention order."""
    groups = load_groups() if groups is None else groups
    people: list[str] = []
    for entry in approvers:
        if entry.startswith(GROUP_PREFIX):
            name = entry[len(GROUP_PREFIX) :]
            if name not in groups:
                known = ", ".join(sorted(groups)) or "none"
                raise InputError(f"approver group '{name}' is not in {config_path()} (groups: {known})")
            members = groups[name]
        else:
            members = [entry]
        people += [m for m in members if m not in people]
    if not people:
        raise InputError(f"approvers {approvers} name nobody (empty groups in {config_path()})")
    return people
