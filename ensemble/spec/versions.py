"""Flow versions: a run request that names its flow by version instead of carrying it.

A flow version is what a run's start event records of its flow: the compact flow and its resolved
agents (the `flow` and `agents` of `RunRequest` as written), named by a digest of their canonical
JSON. Where that version is recorded in the run's namespace (`ensemble/runtime/flow_versions.py`),
a run request names it (`"@": "NAME@DIGEST"`) in place of both, and whoever reads the request puts
the body back from the versions this process knows (`read`). Versions are content-addressed: a
digest names one body, for every run and every process, so what a process keeps is right for any
run that names it, and a replay reads exactly what the run was started with.

Writing by version is asked for around the one call that starts a run (`naming`), never by default:
a child run, a continue-as-new or any other writer records its flow inline as before.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

REF = "@"  # the key of a run request that names its flow version
_BODY = ("flow", "agents")

_known: dict[str, dict[str, Any]] = {}  # digest -> body
_naming: ContextVar[frozenset[str]] = ContextVar("ensemble_flow_versions_naming", default=frozenset())
_on_miss: list[Callable[[str], None]] = []  # told of a version this process was asked for and did not know


class VersionUnknown(ValueError):
    """A run request names a flow version this process does not know (yet)."""


def body_of(written: dict[str, Any]) -> dict[str, Any]:
    """The flow version a written run request holds."""
    return {key: written[key] for key in _BODY if key in written}


def digest(body: dict[str, Any]) -> str:
    """144 bits of SHA-256 over the body's canonical JSON, URL-safe (a workflow id may hold it)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()[:18]).decode()


def remember(body: dict[str, Any]) -> str:
    """Keep a version's body; its digest."""
    found = digest(body)
    _known.setdefault(found, copy.deepcopy(body))
    return found


def known(found: str) -> bool:
    return found in _known


def body(found: str) -> dict[str, Any] | None:
    """The body of a version this process knows, a copy of its own."""
    kept = _known.get(found)
    return copy.deepcopy(kept) if kept is not None else None


def ref(name: str, found: str) -> str:
    return f"{name}{REF}{found}"


def parse_ref(value: Any) -> tuple[str, str]:
    """(flow name, digest) of a reference; ValueError for anything else."""
    if not isinstance(value, str) or REF not in value:
        raise ValueError(f"a flow version is named NAME@DIGEST, not {str(value)[:60]!r}")
    name, _, found = value.rpartition(REF)
    return name, found


def on_miss(hook: Callable[[str], None]) -> Callable[[], None]:
    """Tell `hook` of every reference this process cannot read (a worker fetches its record, and
    may return once it has: the reference is read again); returns the call that stops telling it."""
    _on_miss.append(hook)
    return lambda: _on_miss.remove(hook) if hook in _on_miss else None


def listeners() -> int:
    """How many hooks are told of a miss (each worker's share of the time a reader may wait)."""
    return len(_on_miss)


@contextmanager
def naming(digests: set[str] | frozenset[str]) -> Iterator[None]:
    """Within this block (one task), run requests whose flow version is one of `digests` are
    written naming it."""
    token = _naming.set(frozenset(digests))
    try:
        yield
    finally:
        _naming.reset(token)


def write(written: dict[str, Any]) -> dict[str, Any]:
    """A written run request, naming its flow version where that was asked for (`naming`)."""
    asked = _naming.get()
    if not asked or "flow" not in written:
        return written
    found = digest(body_of(written))
    if found not in asked:
        return written
    name = written["flow"].get("name", "") if isinstance(written["flow"], dict) else ""
    out: dict[str, Any] = {}
    for key, value in written.items():
        if key == "flow":
            out[REF] = ref(name, found)
        elif key not in _BODY:
            out[key] = value
    return out


def read(data: Any) -> Any:
    """A recorded run request with its flow version's body put back (anything else as it is).
    VersionUnknown if this process does not know the version."""
    if not isinstance(data, dict) or REF not in data:
        return data
    name, found = parse_ref(data[REF])
    kept = _known.get(found)
    if kept is None:
        for hook in list(_on_miss):
            try:
                hook(data[REF])
            except Exception:  # noqa: BLE001 - a hook's failure must not hide the miss itself
                pass
            kept = _known.get(found)  # a hook may have read it meanwhile (a worker's fetch)
            if kept is not None:
                break
    if kept is None:
        raise VersionUnknown(
            f"flow '{name}' version {found} is not known to this process yet: it reads it from the "
            f"version's record (workflow {RECORD_PREFIX}{found}), or from the flow files it was deployed with"
        )
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == REF:
            out.update(copy.deepcopy(kept))
        else:
            out[key] = value
    return out


# Each version's record: a workflow of this id whose input is the version (runtime/flow_versions.py).
RECORD_PREFIX = "ensemble-flow-version-"
