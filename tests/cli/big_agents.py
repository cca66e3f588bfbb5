"""An agent whose output is as large as asked: payloads over the SDK's 512 KiB warning size."""

from __future__ import annotations

from ensemble import agent


@agent(description="Answers `kib` KiB of text")
def padded(data: dict) -> dict:
    return {"text": "x" * (int(data["kib"]) * 1024)}
