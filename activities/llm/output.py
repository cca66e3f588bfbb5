"""The structured answer an llm agent must give (`output_model` or `output_schema`), and reading
it out of a model's reply: JSON, perhaps fenced or with text around it, validated against the
model or the schema; what is wrong with it becomes the re-ask (ensemble.activities.llm.loop)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

import jsonschema
from pydantic import BaseModel, ValidationError


@dataclass
class Output:
    """The structured answer an agent must give: a pydantic model, or a JSON Schema."""

    schema: dict[str, Any]  # what the provider is sent (its root is an object)
    model: type[BaseModel] | None = None
    wrapped: bool = False  # the agent's schema is not an object: the answer travels under "value"

    @classmethod
    def of_model(cls, model: type[BaseModel]) -> Output:
        return cls(model.model_json_schema(), model)

    @classmethod
    def of_schema(cls, schema: dict[str, Any]) -> Output:
        if schema.get("type") == "object" or "properties" in schema:
            return cls(schema)
        return cls({"type": "object", "properties": {"value": schema}, "required": ["value"]}, None, True)

    def parse(self, raw: Any) -> Any:
        """The validated answer (JSON data), or ValueError saying what is wrong with it."""
        value = _json_in(raw) if isinstance(raw, str) else raw
        if self.model is not None:
            try:
                return self.model.model_validate(value).model_dump(mode="json")
            except ValidationError as err:
                problems = [f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in err.errors()[:5]]
                raise ValueError("; ".join(problems)) from None
        try:
            jsonschema.validate(value, self.schema)
        except jsonschema.ValidationError as err:
            raise ValueError(f"{'.'.join(str(p) for p in err.absolute_path) or '(root)'}: {err.message}") from None
        return value["value"] if self.wrapped else value


def _json_in(text: str) -> Any:
    text = text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    try:
        return json.loads(text)
    except ValueError as err:
        start, end = text.find("{"), text.rfind("}")
        if 0 <= start < end:
            with contextlib.suppress(ValueError):
                return json.loads(text[start : end + 1])
        raise ValueError(f"the reply is not valid JSON ({getattr(err, 'msg', err)})") from None
