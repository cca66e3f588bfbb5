"""The Ensemble service: one ASGI app (FastAPI on Starlette, served by uvicorn) with the REST API,
its OpenAPI 3.1 document, a self-contained docs page, the inbox and run pages and live events.

FastAPI because it generates the OpenAPI 3.1 document from the typed request and answer models
the endpoints already declare, and validates requests with them (docs/service.md).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError, RPCStatusCode

from ensemble.client import EnsembleClient, RunConflict
from ensemble.runtime.payloads import max_input_bytes
from ensemble.service import api, pages
from ensemble.service.auth import Roles, ServiceError
from ensemble.spec.errors import EnsembleError, InputError

log = logging.getLogger("ensemble.service")


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _one_line(text: str, limit: int = 500) -> str:
    line = " ".join(str(text).split())
    return line[:limit]


def _validation_message(err: RequestValidationError) -> str:
    parts = []
    for e in err.errors()[:3]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return _one_line("; ".join(parts) or "the request is not valid")


def install_errors(app: FastAPI) -> None:
    """Every error is `{"error": {"code", "message"}}`: the CLI's one-line message, a 4xx for the
    caller's mistakes, never a traceback."""

    @app.exception_handler(ServiceError)
    async def _service(_: Request, err: ServiceError) -> JSONResponse:
        return _error(err.status, err.code, err.message, err.headers)

    @app.exception_handler(RunConflict)
    async def _conflict(_: Request, err: RunConflict) -> JSONResponse:
        return _error(409, "conflict", _one_line(str(err)))

    @app.exception_handler(InputError)
    async def _input(_: Request, err: InputError) -> JSONResponse:
        return _error(400, "invalid_input", _one_line(str(err)))

    @app.exception_handler(EnsembleError)
    async def _refused(_: Request, err: EnsembleError) -> JSONResponse:
        text = _one_line(str(err))
        if text.startswith("no run with id"):
            return _error(404, "not_found", text)
        return _error(409, "refused", text)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        return _error(422, "invalid_request", _validation_message(err))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        return _error(err.status_code, code, _one_line(str(err.detail)), getattr(err, "headers", None))

    @app.exception_handler(RPCError)
    async def _rpc(_: Request, err: RPCError) -> JSONResponse:
        if err.status == RPCStatusCode.NOT_FOUND:
            return _error(404, "not_found", _one_line(err.message))
        if err.status in (RPCStatusCode.INVALID_ARGUMENT, RPCStatusCode.FAILED_PRECONDITION):
            return _error(400, "invalid_input", _one_line(err.message))
        log.warning("Temporal answered %s: %s", err.status, err.message)
        return _error(503, "unavailable", "Temporal is unavailable or refused the request; try again")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return _error(500, "internal", f"the service failed unexpectedly ({type(err).__name__}); see its log")


def create_app(client: EnsembleClient | None = None, *, roles: Roles | None = None) -> FastAPI:
    """The service over `client` (or one connected as the environment says, at startup)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not hasattr(app.state, "service"):
            app.state.service = api.Service(await EnsembleClient.connect(), roles)
        yield

    app = FastAPI(
        title="Ensemble",
        version="0.1.0",
        summary="Start, follow and decide Ensemble runs",
        description=(
            "Bearer tokens from `python starter.py keys token USER` offline, or an identity provider's. "
            "See docs/service.md."
        ),
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    if client is not None:
        app.state.service = api.Service(client, roles)
    install_errors(app)

    @app.middleware("http")
    async def _body_limit(request: Request, call_next: Any) -> Any:
        """Refuse a body larger than any run input may be before reading it (413)."""
        size = request.headers.get("content-length")
        limit = max_input_bytes() + 64 * 1024
        if size is not None and (not size.isdigit() or int(size) > limit):
            return _error(
                413, "too_large", f"the request body is over {limit / 2**20:.1f} MiB, the limit for a run's input"
            )
        return await call_next(request)

    app.include_router(api.router)
    app.include_router(pages.router)

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    return app
