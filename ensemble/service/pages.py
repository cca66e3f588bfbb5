"""The pages the service serves itself (no CDN, nothing loaded from elsewhere): the docs page for
the OpenAPI document, the approvals inbox and a run's page. They are server-rendered shells; their
data comes from the API with the bearer token the person signed in with (kept in the tab's
sessionStorage), and a run moves on live through its server-sent events."""

from __future__ import annotations

import html
import os
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ensemble.runtime import server

router = APIRouter(include_in_schema=False)
UI_ENV = "ENSEMBLE_TEMPORAL_UI_URL"
CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"


def _static(name: str) -> str:
    return resources.files("ensemble.service").joinpath("static", name).read_text()


def temporal_ui() -> str:
    """The Temporal Web UI's address: ENSEMBLE_TEMPORAL_UI_URL, else the embedded server's."""
    if os.environ.get(UI_ENV):
        return os.environ[UI_ENV].rstrip("/")
    info = server.running() if not os.environ.get("TEMPORAL_ADDRESS") else None
    return info.ui_url if info is not None else "http://127.0.0.1:8233"


def _page(title: str, body: str, data: dict[str, str]) -> HTMLResponse:
    attrs = " ".join(f'data-{k}="{html.escape(v, quote=True)}"' for k, v in data.items())
    text = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} · Ensemble</title><link rel="stylesheet" href="/static/style.css"></head>
<body {attrs}>
<header><a href="/inbox" class="brand">Ensemble</a> <nav><a href="/inbox">Inbox</a> <a href="/docs">API</a></nav>
<form id="signin"><input id="token" type="password" autocomplete="off"
 placeholder="bearer token (python starter.py keys token USER)"><button type="submit">Sign in</button></form>
<span id="who"></span> <button id="signout" hidden>Sign out</button></header>
<main>{body}</main>
<script src="/static/app.js"></script></body></html>"""
    return HTMLResponse(text, headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"})


def _table(name: str, *columns: str) -> str:
    head = "".join(f"<th>{c}</th>" for c in columns)
    return f'<table id="{name}"><thead><tr>{head}</tr></thead><tbody></tbody></table>'


@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse("/inbox")


@router.get("/inbox")
async def inbox_page() -> HTMLResponse:
    body = """<h1>Waiting on you</h1><p id="status" role="status">Sign in to see the gates waiting on you.</p>
<div id="gates"></div>"""
    return _page("Inbox", body, {"page": "inbox"})


@router.get("/ui/runs/{run_id}")
async def run_page(run_id: str, request: Request) -> HTMLResponse:
    service = request.app.state.service
    ns = service.client.temporal.namespace
    link = f"{temporal_ui()}/namespaces/{ns}/workflows/{run_id}"
    body = f"""<h1>Run <code>{html.escape(run_id)}</code></h1>
<p><a id="temporal-link" href="{html.escape(link, quote=True)}" target="_blank" rel="noopener">
Open in Temporal's Web UI</a></p>
<p id="status" role="status">Sign in to see this run.</p>
<section id="gate"></section>
<h2>Steps</h2>{_table("steps", "step", "agent", "status", "attempts", "latency", "summary")}
<h2>Timeline</h2><div id="timeline"></div>
<h2>Decisions</h2>{_table("decisions", "gate", "decision", "by", "at", "verified")}
<h2>Live</h2><ol id="events"></ol>"""
    return _page(f"Run {run_id}", body, {"page": "run", "run": run_id, "gate": request.query_params.get("gate", "")})


@router.get("/docs")
async def docs_page() -> HTMLResponse:
    body = """<h1>Ensemble API</h1><p>The OpenAPI 3.1 document: <a href="/openapi.json">/openapi.json</a>.
Every call but <code>/health</code> takes <code>Authorization: Bearer TOKEN</code>.</p><div id="api"></div>"""
    return _page("API", body, {"page": "docs"})


@router.get("/static/{name}")
async def static(name: str) -> Response:
    kinds = {"app.js": "text/javascript", "style.css": "text/css"}
    if name not in kinds:
        return Response("not found", status_code=404, media_type="text/plain")
    return Response(_static(name), media_type=kinds[name], headers={"Cache-Control": "no-cache"})
