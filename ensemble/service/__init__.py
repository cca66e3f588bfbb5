"""The Ensemble service: the REST API, the approvals inbox and live progress (docs/service.md).

    python starter.py serve [--host 127.0.0.1] [--port 8000]

`create_app` is imported on first use, so `ensemble.service.auth` (bearer tokens, used by
`starter.py keys token`) loads without the web stack.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from ensemble.service.app import create_app

        return create_app
    raise AttributeError(name)
