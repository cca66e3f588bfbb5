"""Large values by reference: Temporal's external payload storage (`temporalio.converter.ExternalStorage`).

A payload over the threshold (default 256 KiB) is written to a store and only a small reference
enters the run's history, so a 20 MB document runs through a flow instead of failing every workflow
task with PAYLOADS_TOO_LARGE. Which store, from `ENSEMBLE_PAYLOAD_STORE`:

- unset: with the embedded server, a file store in the state directory (`$ENSEMBLE_HOME/payloads`);
  on a cluster (TEMPORAL_ADDRESS set), none: every worker and client must see the same store;
- `off`: none; a run's input is then limited to what fits inline;
- `file:/PATH` (or a plain path): a file store at PATH, shared by every worker and client (a
  shared volume);
- `python:MODULE:FUNCTION`: FUNCTION() returns an `ExternalStorage`, e.g. with the SDK's S3 driver
  (`temporalio.contrib.aws.s3driver`), see docs/operations.md.

The file store is content-addressed (SHA-256 of the payload), written atomically, owner-only, and
checked on read. Writing a value it already holds refreshes the file's time, and each namespace
that writes to it is recorded (`.namespaces/`): `starter.py payloads prune` (ensemble/runs/prune.py)
deletes only values no run refers to that were not written or used within a grace period, and
walks every namespace that wrote to the store.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib
import json
import os
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.api.sdk.v1 import ExternalStorageReference
from temporalio.converter import (
    ExternalStorage,
    StorageDriver,
    StorageDriverClaim,
    StorageDriverRetrieveContext,
    StorageDriverStoreContext,
)

from ensemble.spec.errors import EnsembleError, InputError

DEFAULT_THRESHOLD = 256 * 1024
# The largest payload Temporal takes: `limit.blobSize.error`, 2 MB by default, which the embedded
# server (runtime/server.py) and the cluster settings in deploy/ lower to 1 MiB (docs/security.md).
INLINE_LIMIT = 1024 * 1024
INLINE_INPUT_LIMIT = 512 * 1024  # without a store: a run's input is copied into the state and step inputs
STORED_INPUT_LIMIT = 64 * 1024 * 1024  # with a store: bounded by the worker's memory, not by Temporal


NAMESPACES_DIR = ".namespaces"
# The namespace the SDK's Replayer runs under (`replay`, `upgrade-check`): a replay writes again
# only values its history already refers to, so it is not a namespace whose runs use the store.
REPLAY_NAMESPACE = "ReplayNamespace"


class FileStorageDriver(StorageDriver):
    """Payloads as files named by their SHA-256 under one directory (local or a shared volume)."""

    def __init__(self, root: Path | str, name: str = "ensemble.file") -> None:
        self.root = Path(root)
        self._name = name
        self._namespaces: set[str] = set()  # recorded in the store by this process

    def name(self) -> str:
        return self._name

    def type(self) -> str:
        return "ensemble.file"

    def _path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def _write(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        path = self._path(digest)
        if path.exists():
            try:
                os.utime(path)  # used again now: `payloads prune` counts its grace from here
                return digest
            except FileNotFoundError:
                pass  # pruned as it was found: written again below
            except OSError:
                return digest  # a store this process may read but not touch
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{digest}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return digest

    def _read(self, digest: str) -> bytes:
        path = self._path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise RuntimeError(f"payload {digest[:12]} is missing from the payload store {self.root}") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise RuntimeError(f"payload {digest[:12]} in the payload store {self.root} is corrupt")
        return data

    def _record_namespace(self, namespace: str) -> None:
        """Mark the store as written for `namespace` (once per process): a prune must walk it too."""
        if namespace in self._namespaces or namespace == REPLAY_NAMESPACE:
            return
        marks = self.root / NAMESPACES_DIR
        marks.mkdir(mode=0o700, parents=True, exist_ok=True)
        mark = marks / urllib.parse.quote(namespace, safe="")
        if not mark.exists():
            os.close(os.open(mark, os.O_WRONLY | os.O_CREAT, 0o600))
        self._namespaces.add(namespace)

    def namespaces(self) -> set[str]:
        """The namespaces whose runs wrote to this store."""
        marks = self.root / NAMESPACES_DIR
        return {urllib.parse.unquote(m.name) for m in marks.iterdir()} if marks.is_dir() else set()

    async def store(self, context: StorageDriverStoreContext, payloads: Sequence[Payload]) -> list[StorageDriverClaim]:
        namespace = context.target.namespace if context.target is not None else None

        def write() -> list[str]:
            if namespace:
                self._record_namespace(namespace)
            return [self._write(p.SerializeToString()) for p in payloads]

        digests = await asyncio.to_thread(write)
        return [StorageDriverClaim(claim_data={"sha256": d}) for d in digests]

    async def retrieve(
        self, context: StorageDriverRetrieveContext, claims: Sequence[StorageDriverClaim]
    ) -> list[Payload]:
        blobs = await asyncio.to_thread(lambda: [self._read(c.claim_data["sha256"]) for c in claims])
        return [Payload.FromString(b) for b in blobs]


def _threshold() -> int:
    raw = os.environ.get("ENSEMBLE_PAYLOAD_THRESHOLD_KB", "").strip()
    if not raw:
        return DEFAULT_THRESHOLD
    try:
        threshold = max(0, int(raw)) * 1024
    except ValueError:
        raise InputError(f"ENSEMBLE_PAYLOAD_THRESHOLD_KB={raw!r} is not a number of KiB") from None
    if threshold > INLINE_LIMIT // 2:
        raise InputError(
            f"ENSEMBLE_PAYLOAD_THRESHOLD_KB={raw} is over {INLINE_LIMIT // 2048}: a payload kept inline must stay "
            f"well under the {INLINE_LIMIT // 1024} KiB Temporal takes (limit.blobSize.error)"
        )
    return threshold


@functools.lru_cache(maxsize=8)
def _configured(setting: str, home: str, embedded: bool, threshold: int) -> ExternalStorage | None:
    if not setting:
        if not embedded:
            return None
        return ExternalStorage(drivers=[FileStorageDriver(Path(home) / "payloads")], payload_size_threshold=threshold)
    if setting.lower() in ("off", "none", "0", "false"):
        return None
    if setting.startswith("python:"):
        module, _, attr = setting[len("python:") :].rpartition(":")
        try:
            made = getattr(importlib.import_module(module), attr)()
        except Exception as err:
            raise EnsembleError(
                f"ENSEMBLE_PAYLOAD_STORE={setting}: cannot build the store: {type(err).__name__}: {err}"
            ) from None
        if isinstance(made, StorageDriver):
            made = ExternalStorage(drivers=[made], payload_size_threshold=threshold)
        if not isinstance(made, ExternalStorage):
            raise EnsembleError(
                f"ENSEMBLE_PAYLOAD_STORE={setting}: the function must return an ExternalStorage or a StorageDriver"
            )
        return made
    path = setting[len("file:") :] if setting.startswith("file:") else setting
    if path.startswith("//"):
        path = path[2:]
    return ExternalStorage(
        drivers=[FileStorageDriver(Path(path).expanduser().resolve())], payload_size_threshold=threshold
    )


@functools.lru_cache(maxsize=8)
def _resolved(home: str, cwd: str) -> str:
    return str((Path(cwd) / home).resolve())


def external_storage() -> ExternalStorage | None:
    """The payload store this process's environment configures (see the module docstring); read
    for every agent step, so the state directory is resolved once per setting."""
    home = _resolved(os.environ.get("ENSEMBLE_HOME") or ".ensemble", os.getcwd())
    embedded = not os.environ.get("TEMPORAL_ADDRESS")
    return _configured(os.environ.get("ENSEMBLE_PAYLOAD_STORE", "").strip(), home, embedded, _threshold())


def max_input_bytes() -> int:
    """The largest run input accepted before a run starts."""
    raw = os.environ.get("ENSEMBLE_MAX_INPUT_MB", "").strip()
    if raw:
        try:
            return int(float(raw) * 2**20)
        except ValueError:
            raise InputError(f"ENSEMBLE_MAX_INPUT_MB={raw!r} is not a number") from None
    return STORED_INPUT_LIMIT if external_storage() is not None else INLINE_INPUT_LIMIT


# ---------------------------------------------------------------- values by reference in a history


def visit_messages(message: Message, visit: Callable[[Message, str], bool]) -> None:
    """Call `visit(item, its type's full name)` for every message inside `message`: fields, repeated
    items and map values, depth first; an item's own fields are visited unless `visit` returns True."""
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        message_type = field.message_type
        assert message_type is not None  # every message field has its message type
        if message_type.GetOptions().map_entry:
            inner = message_type.fields_by_name["value"]
            if inner.type == FieldDescriptor.TYPE_MESSAGE:
                assert inner.message_type is not None  # a message-typed map value has its message type
                for key in list(value):
                    if not visit(value[key], inner.message_type.full_name):
                        visit_messages(value[key], visit)
            continue
        for item in value if field.is_repeated else [value]:
            if not visit(item, message_type.full_name):
                visit_messages(item, visit)


_PAYLOAD = Payload.DESCRIPTOR.full_name
_REFERENCE_TYPE = ExternalStorageReference.DESCRIPTOR.full_name.encode()
_LEGACY_REFERENCE = b"json/external-storage-reference"  # what earlier SDK releases wrote
# A reference encoded by the payload codec carries this metadata key (the SDK reads such references
# and does not write them yet); its claim cannot be read without the codec.
_ENCODED_REFERENCE = "__temporal_external_storage_reference"


def _reference(payload: Payload) -> tuple[str, dict[str, str]] | None:
    """(driver name, claim) when `payload` stands for a value kept in a payload store."""
    encoding = payload.metadata.get("encoding", b"")
    if _ENCODED_REFERENCE in payload.metadata:
        raise InputError(
            "it holds a reference to the payload store encoded by a payload codec, which this release does not read"
        )
    try:
        if encoding == b"json/protobuf" and payload.metadata.get("messageType") == _REFERENCE_TYPE:
            ref = json_format.Parse(payload.data, ExternalStorageReference(), ignore_unknown_fields=True)
            return ref.driver_name, dict(ref.claim_data)
        if encoding == _LEGACY_REFERENCE:
            data = json.loads(payload.data)
            return str(data["driver_name"]), {str(k): str(v) for k, v in data["driver_claim"]["claim_data"].items()}
    except (json_format.ParseError, ValueError, KeyError, TypeError, AttributeError):
        raise InputError("a reference to the payload store in it is malformed") from None
    return None


def stored_values(events: Iterable[Message]) -> list[tuple[Payload, str, dict[str, str]]]:
    """Every payload in `events` that refers to a value in a payload store, with its driver and claim."""
    found: list[tuple[Payload, str, dict[str, str]]] = []

    def visit(item: Message, type_name: str) -> bool:
        if type_name != _PAYLOAD:
            return False
        ref = _reference(item)  # type: ignore[arg-type]
        if ref is not None:
            found.append((item, *ref))  # type: ignore[arg-type]
        return True

    for event in events:
        visit_messages(event, visit)
    return found


async def inline_stored(events: Iterable[Message], storage: ExternalStorage | None, source: str) -> int:
    """Put back, in place, every value `events` hold by reference to a payload store, read from
    `storage`: the history then reads as if every value had travelled inline, with no store (an
    exported record outlives the store's files). Returns how many were put back. No store, a
    driver it lacks, or a value missing from it is an error naming `source`."""
    try:
        refs = stored_values(events)
    except InputError as err:
        raise InputError(f"{source}: {err}") from None
    if not refs:
        return 0
    names = sorted({name for _, name, _ in refs})
    if storage is None:
        raise InputError(
            f"{source} holds {len(refs)} value(s) by reference to a payload store (driver {', '.join(names)}) and no "
            "store is configured here: set ENSEMBLE_PAYLOAD_STORE to the store the run's workers used "
            "(`starter.py history RUN_ID --out FILE` writes the values themselves into FILE)"
        )
    drivers = {driver.name(): driver for driver in storage.drivers}
    for name in names:
        driver = drivers.get(name)
        if driver is None:
            raise InputError(
                f"{source} holds values by reference to payload store driver '{name}', which the configured store "
                f"does not have ({', '.join(sorted(drivers)) or 'none'}): set ENSEMBLE_PAYLOAD_STORE as the workers have it"
            )
        group = [payload for payload, of, _ in refs if of == name]
        claims = [StorageDriverClaim(claim_data=claim) for _, of, claim in refs if of == name]
        try:
            values = await driver.retrieve(StorageDriverRetrieveContext(), claims)
        except Exception as err:
            raise EnsembleError(f"{source}: cannot read a value it holds by reference: {err}") from None
        if len(values) != len(group):
            raise EnsembleError(
                f"{source}: payload store driver '{name}' returned {len(values)} of {len(group)} values"
            )
        for payload, value in zip(group, values, strict=True):
            payload.CopyFrom(value)
    return len(refs)
