"""The JSON Schema of flow files: `python -m ensemble.spec.schema [OUT]` (stdout without OUT; the
repository keeps it as docs/flow.schema.json)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ensemble.spec.models import FlowSpec


def flow_schema() -> str:
    schema = FlowSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Ensemble flow file"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(flow_schema())
        print(f"wrote {sys.argv[1]}")
    else:
        sys.stdout.write(flow_schema())
