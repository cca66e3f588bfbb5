"""The Ensemble service: the REST API, the approvals inbox and live progress (docs/service.md).

    python starter.py serve [--host 127.0.0.1] [--port 8000]
"""

from ensemble.service.app import create_app

__all__ = ["create_app"]
