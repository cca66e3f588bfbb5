"""The data converter every Ensemble client, worker and replayer uses: pydantic models on the
wire. One place, so that payload encoding (encryption, large payloads by reference) is the same
for every process that reads or writes a run."""

from __future__ import annotations

import dataclasses

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter

from ensemble.runtime.payloads import external_storage


def data_converter() -> DataConverter:
    """The converter for this process, as its environment configures it."""
    converter = pydantic_data_converter
    store = external_storage()  # large values by reference (ensemble/runtime/payloads.py)
    if store is not None:
        converter = dataclasses.replace(converter, external_storage=store)
    return converter
