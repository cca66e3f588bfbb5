"""The JSON Schema of flow files: `python -m ensemble.schema [OUT]` (default docs/flow.schema.json)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ensemble.spec import FlowSpec

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "flow.schema.json"


def flow_schema() -> str:
    schema = FlowSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Ensemble flow file"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    out.write_text(flow_schema())
    print(f"wrote {out}")
