"""Schemathesis checks of our own (loaded with SCHEMATHESIS_HOOKS): no answer carries a traceback,
and every error answer has the service's stable shape."""

import os

import schemathesis

MARK = os.environ.get("ENSEMBLE_FUZZ_MARK")


def _mark(name: str) -> None:
    if MARK:
        with open(MARK, "a") as out:
            out.write(name + "\n")


@schemathesis.check
def no_traceback(ctx, response, case):
    _mark("no_traceback")
    text = response.text or ""
    if "Traceback (most recent call last)" in text or 'File "/' in text:
        raise AssertionError("a traceback in the response")


@schemathesis.check
def error_shape(ctx, response, case):
    _mark("error_shape")
    if response.status_code >= 400 and "json" in (response.headers.get("content-type") or [""])[0]:
        body = response.json()
        if set(body) != {"error"} or set(body["error"]) != {"code", "message"}:
            raise AssertionError(f"an error answer without the stable shape: {body}")
