"""The payload store's configuration and its file driver (the store itself runs in test_runs_end.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.converter import ExternalStorage, StorageDriverRetrieveContext, StorageDriverStoreContext

from ensemble.runtime import payloads
from ensemble.runtime.payloads import FileStorageDriver
from ensemble.spec.errors import EnsembleError, InputError

pytestmark = pytest.mark.reliability


def test_file_driver_round_trip_is_content_addressed_owner_only_and_checked(tmp_path: Path) -> None:
    driver = FileStorageDriver(tmp_path / "store")
    payload = Payload(metadata={"encoding": b"json/plain"}, data=b'"' + b"x" * 300_000 + b'"')
    [claim] = asyncio.run(driver.store(StorageDriverStoreContext(), [payload]))
    [again] = asyncio.run(driver.store(StorageDriverStoreContext(), [payload]))
    assert claim == again  # the same bytes, one file
    [path] = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert path.stat().st_mode & 0o077 == 0 and path.parent.stat().st_mode & 0o077 == 0
    [back] = asyncio.run(driver.retrieve(StorageDriverRetrieveContext(), [claim]))
    assert back == payload
    path.write_bytes(path.read_bytes()[:-1] + b"!")
    with pytest.raises(RuntimeError, match="corrupt"):
        asyncio.run(driver.retrieve(StorageDriverRetrieveContext(), [claim]))
    path.unlink()
    with pytest.raises(RuntimeError, match="missing"):
        asyncio.run(driver.retrieve(StorageDriverRetrieveContext(), [claim]))


def make_store() -> FileStorageDriver:  # ENSEMBLE_PAYLOAD_STORE=python:tests.reliability.test_payload_store:make_store
    return FileStorageDriver("/tmp/ensemble-test-store", name="custom")


def test_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ENSEMBLE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ENSEMBLE_PAYLOAD_STORE", raising=False)
    monkeypatch.delenv("ENSEMBLE_MAX_INPUT_MB", raising=False)
    monkeypatch.delenv("TEMPORAL_ADDRESS", raising=False)
    store = payloads.external_storage()
    assert isinstance(store, ExternalStorage) and store.drivers[0].root == tmp_path / "home" / "payloads"
    assert payloads.max_input_bytes() == payloads.STORED_INPUT_LIMIT
    monkeypatch.setenv("TEMPORAL_ADDRESS", "cluster:7233")  # a cluster: no store unless configured
    assert payloads.external_storage() is None and payloads.max_input_bytes() == payloads.INLINE_INPUT_LIMIT
    monkeypatch.setenv("ENSEMBLE_PAYLOAD_STORE", f"file:{tmp_path}/shared")
    assert payloads.external_storage().drivers[0].root == tmp_path / "shared"
    monkeypatch.setenv("ENSEMBLE_PAYLOAD_STORE", "python:tests.reliability.test_payload_store:make_store")
    assert payloads.external_storage().drivers[0].name() == "custom"
    monkeypatch.setenv("ENSEMBLE_PAYLOAD_STORE", "python:no.such.module:store")
    with pytest.raises(EnsembleError, match="cannot build the store"):
        payloads.external_storage()
    monkeypatch.setenv("ENSEMBLE_PAYLOAD_STORE", "off")
    assert payloads.external_storage() is None
    monkeypatch.setenv("ENSEMBLE_MAX_INPUT_MB", "lots")
    with pytest.raises(InputError):
        payloads.max_input_bytes()
