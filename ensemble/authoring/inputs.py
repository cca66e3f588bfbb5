"""Checking a run's input before it starts: its size (Temporal refuses payloads over 2 MiB) and the
flow's input schema."""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from ensemble.authoring.flows import LoadedFlow
from ensemble.spec.errors import InputError

MAX_INPUT_BYTES = 2 * 1024 * 1024


def check_input(value: Any, flow: LoadedFlow) -> None:
    size = len(json.dumps(value).encode())
    if size > MAX_INPUT_BYTES:
        raise InputError(
            f"input is {size / 2**20:.1f} MiB; a run's input must stay under 2 MiB: pass large documents by reference"
        )
    if isinstance(flow.spec.input_schema, dict):
        try:
            jsonschema.validate(value, flow.spec.input_schema)
        except jsonschema.ValidationError as err:
            where = "/".join(str(p) for p in err.absolute_path) or "(root)"
            raise InputError(f"input does not match flow '{flow.spec.name}': at {where}: {err.message}") from None
        except jsonschema.SchemaError as err:
            raise InputError(f"flow '{flow.spec.name}' has an invalid input_schema: {err.message}") from None
