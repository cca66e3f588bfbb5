"""`starter.py serve [--host H] [--port P]`: the Ensemble service (REST API, inbox, live events;
docs/service.md), one uvicorn process over the Python client API."""

from __future__ import annotations

import argparse

from ensemble.runtime import flow_versions
from ensemble.spec.errors import InputError


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from ensemble.service import create_app

    if not 0 < args.port < 65536:
        raise InputError(f"--port {args.port} is not a TCP port (1-65535)")
    flow_versions.enabled()  # a malformed ENSEMBLE_FLOW_REFS stops the service here, not each start
    print(
        f"Ensemble service on http://{args.host}:{args.port} (inbox /inbox, API docs /docs, OpenAPI /openapi.json)",
        flush=True,
    )
    uvicorn.run(
        create_app(), host=args.host, port=args.port, log_level=args.log_level, proxy_headers=True, server_header=False
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("serve", help="the HTTP service: REST API, approvals inbox, live run events (docs/service.md)")
    s.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 in a container)"
    )
    s.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    s.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    s.set_defaults(fn=cmd_serve)
