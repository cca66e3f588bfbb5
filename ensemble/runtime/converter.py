"""The data converter every Ensemble client, worker and replayer uses: pydantic models on the
wire. One place, so that payload encoding (encryption, large payloads by reference) is the same
for every process that reads or writes a run."""

from __future__ import annotations

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter


def data_converter() -> DataConverter:
    """The converter for this process, as its environment configures it."""
    return pydantic_data_converter
