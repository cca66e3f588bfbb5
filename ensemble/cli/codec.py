"""`starter.py codec-key` and `starter.py codec-server`: keys for encryption at rest, and the codec
endpoint Temporal's Web UI and the `temporal` CLI (`--codec-endpoint`) decode payloads through
(encrypted ones with this process's keys, compressed ones always).

The endpoint speaks Temporal's remote codec protocol (POST /encode and /decode with
`{"payloads": [...]}` in protobuf JSON), binds 127.0.0.1 by default, answers only requests with
`Authorization: Bearer TOKEN` (the token from ENSEMBLE_CODEC_TOKEN or `--token-file`, an
owner-only file), and allows cross-origin requests from the Web UI's origin only.
"""

from __future__ import annotations

import argparse
import hmac
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import PayloadCodec

from ensemble.runtime import codec, compression, server
from ensemble.runtime.converter import codec as process_codec
from ensemble.spec.errors import EnsembleError, InputError

TOKEN_ENV = "ENSEMBLE_CODEC_TOKEN"


def _token(path: str | None) -> str:
    if path:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
            if mode & 0o077:
                raise InputError(f"--token-file {path} is readable by others (mode {mode:04o}); chmod 600 {path}")
            token = Path(path).read_text().strip()
        except OSError as err:
            raise InputError(f"--token-file {path}: {err.strerror or err}") from None
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if len(token) < 16:
        raise InputError(
            f"the codec endpoint needs a bearer token of 16+ characters: set {TOKEN_ENV} or pass --token-file "
            '(make one with: python -c "import secrets; print(secrets.token_urlsafe(32))")'
        )
    return token


class EndpointCodec(PayloadCodec):
    """What the endpoint does: decode = decrypt (with keys), then inflate compressed payloads;
    encode = compress (when this process compresses), then encrypt (with keys)."""

    def __init__(self, sealing: PayloadCodec | None, min_bytes: int | None) -> None:
        self.sealing, self.min_bytes = sealing, min_bytes

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        floor = self.min_bytes
        packed = [compression.deflate(p, floor) for p in payloads] if floor is not None else list(payloads)
        return await self.sealing.encode(packed) if self.sealing is not None else packed

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        opened = await self.sealing.decode(payloads) if self.sealing is not None else payloads
        return [compression.inflate(p) for p in opened]


def build_app(token: str, origins: list[str]) -> Any:
    """The ASGI app of the codec endpoint (Starlette)."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.cors import CORSMiddleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    the_codec = EndpointCodec(process_codec(), compression.min_bytes_setting())
    expected = f"Bearer {token}".encode()

    async def handle(request: Request) -> Response:
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return JSONResponse({"message": "missing or wrong bearer token"}, status_code=401)
        try:
            payloads = json_format.Parse(await request.body(), Payloads())
            action = the_codec.encode if request.url.path.endswith("/encode") else the_codec.decode
            out = Payloads(payloads=await action(list(payloads.payloads)))
        except (json_format.ParseError, ValueError):
            return JSONResponse({"message": 'the body is not {"payloads": [...]}'}, status_code=400)
        except (codec.CodecError, compression.CompressionError) as err:
            return JSONResponse({"message": str(err)}, status_code=400)
        return Response(json_format.MessageToJson(out), media_type="application/json")

    routes = [
        Route(p, handle, methods=["POST"]) for p in ("/encode", "/decode", "/{namespace}/encode", "/{namespace}/decode")
    ]
    cors = Middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=["POST"],
        allow_headers=["Authorization", "Content-Type", "X-Namespace"],
        allow_credentials=True,
    )
    return Starlette(routes=routes, middleware=[cors])


def cmd_key(args: argparse.Namespace) -> int:
    print(f"{args.kid}:{codec.new_key()}")
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    import uvicorn

    token = _token(args.token_file)
    origins = list(args.ui_origin or [])
    if not origins:
        info = server.running()
        origins = [info.ui_url] if info else []
    app = build_app(token, origins)
    where = f"http://{args.host}:{args.port}"
    print(f"codec endpoint on {where} (Web UI origins: {', '.join(origins) or 'none'}); Ctrl-C to stop", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    except SystemExit as err:  # uvicorn exits when it cannot bind
        raise EnsembleError(f"cannot serve the codec endpoint on {where}; choose another --port") from err
    return 0


def register(sub: Any) -> None:
    s = sub.add_parser("codec-key", help="print a new encryption key entry (kid:base64) for ENSEMBLE_CODEC_KEYS")
    s.add_argument("--kid", default="k1", help="the key id to print it with (default k1)")
    s.set_defaults(fn=cmd_key)

    s = sub.add_parser("codec-server", help="serve the codec endpoint for the Web UI and `temporal --codec-endpoint`")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=codec.endpoint_port(), help=f"port (default {codec.endpoint_port()})")
    s.add_argument(
        "--token-file", metavar="FILE", help=f"owner-only file holding the bearer token (default: ${TOKEN_ENV})"
    )
    s.add_argument(
        "--ui-origin",
        action="append",
        metavar="URL",
        help="Web UI origin allowed cross-origin (default: the embedded server's UI)",
    )
    s.set_defaults(fn=cmd_server)
