"""A loopback model server for tests: OpenAI chat completions and Anthropic messages, scripted.

    python -m tests.llm_server --script SCRIPT.json --log REQUESTS.jsonl [--port N]

It prints `listening on http://127.0.0.1:PORT` once ready. Every request it receives is appended
to the log (path, headers, body, time, which script entry answered), so tests can count calls.

The script is a JSON list of replies. A request takes the first unused entry whose `match` text
occurs in its body (an entry without `match` fits any request); `"repeat": true` keeps an entry
for every later request. Entry fields:

    status   HTTP status (200)             headers  extra reply headers ({"Retry-After": "1"})
    delay    seconds to wait first         raw      a body sent as is (e.g. malformed JSON)
    error    {"message", "type", "code"}   the provider's error body
    reply    {"text", "json", "tool_calls": [{"name", "arguments", "id"}], "usage": [prompt, completion],
              "finish": "stop|length|content_filter|refusal", "refusal": TEXT}

`reply.json` is a structured answer: OpenAI gets it as the message content, Anthropic as a call
of the request's `final_answer` tool (as text when the request offers none).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class Script:
    def __init__(self, entries: list[dict[str, Any]], log: Path) -> None:
        self.entries, self.used, self.log = entries, [False] * len(entries), log
        self.lock = threading.Lock()

    def take(self, text: str) -> tuple[int | None, dict[str, Any] | None]:
        with self.lock:
            for i, entry in enumerate(self.entries):
                if (self.used[i] and not entry.get("repeat")) or entry.get("match", "") not in text:
                    continue
                self.used[i] = True
                return i, entry
        return None, None

    def record(self, item: dict[str, Any]) -> None:
        with self.lock, self.log.open("a") as f:
            f.write(json.dumps(item) + "\n")


def openai_reply(reply: dict[str, Any], body: dict[str, Any], n: int) -> dict[str, Any]:
    prompt, completion = reply.get("usage", [10, 5])
    message: dict[str, Any] = {"role": "assistant", "content": reply.get("text")}
    if "json" in reply:
        message["content"] = json.dumps(reply["json"])
    calls = [
        {
            "id": c.get("id", f"call_{n}_{i}"),
            "type": "function",
            "function": {
                "name": c["name"],
                "arguments": c["arguments"] if isinstance(c["arguments"], str) else json.dumps(c["arguments"]),
            },
        }
        for i, c in enumerate(reply.get("tool_calls", []))
    ]
    if calls:
        message["tool_calls"] = calls
    if reply.get("refusal"):
        message["refusal"] = reply["refusal"]
    finish = reply.get("finish") or ("tool_calls" if calls else "stop")
    return {
        "id": f"chatcmpl-{n}",
        "object": "chat.completion",
        "model": body.get("model"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }


def anthropic_reply(reply: dict[str, Any], body: dict[str, Any], n: int) -> dict[str, Any]:
    prompt, completion = reply.get("usage", [10, 5])
    blocks: list[dict[str, Any]] = [{"type": "text", "text": reply["text"]}] if reply.get("text") else []
    offered = {t["name"] for t in body.get("tools", [])}
    if "json" in reply:
        if "final_answer" in offered:
            blocks.append(
                {"type": "tool_use", "id": f"toolu_{n}_final", "name": "final_answer", "input": reply["json"]}
            )
        else:
            blocks.append({"type": "text", "text": json.dumps(reply["json"])})
    for i, c in enumerate(reply.get("tool_calls", [])):
        blocks.append(
            {"type": "tool_use", "id": c.get("id", f"toolu_{n}_{i}"), "name": c["name"], "input": c["arguments"]}
        )
    if reply.get("refusal"):
        blocks.append({"type": "text", "text": reply["refusal"]})
    stop = {"length": "max_tokens", "refusal": "refusal", "content_filter": "refusal"}.get(reply.get("finish", ""))
    stop = stop or ("tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn")
    return {
        "id": f"msg_{n}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": blocks,
        "stop_reason": stop,
        "usage": {"input_tokens": prompt, "output_tokens": completion},
    }


def error_body(error: dict[str, Any], anthropic: bool) -> dict[str, Any]:
    if anthropic:
        return {
            "type": "error",
            "error": {"type": error.get("type", "invalid_request_error"), "message": error.get("message", "")},
        }
    return {
        "error": {
            "message": error.get("message", ""),
            "type": error.get("type", "invalid_request_error"),
            "code": error.get("code"),
        }
    }


def handler(script: Script) -> type[BaseHTTPRequestHandler]:
    counter = {"n": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            route = self.path.split("?", 1)[0]
            anthropic = route.endswith("/v1/messages")
            if not anthropic and not route.endswith("/chat/completions"):
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            counter["n"] += 1
            index, entry = script.take(raw)
            script.record(
                {
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": json.loads(raw or "null"),
                    "t": time.time(),
                    "entry": index,
                }
            )
            if entry is None:
                return self._send(
                    500, error_body({"message": "the test script has no reply left for this request"}, anthropic)
                )
            time.sleep(float(entry.get("delay", 0)))
            status = int(entry.get("status", 200))
            if "raw" in entry:
                return self._send(status, entry["raw"], entry.get("headers"))
            if "error" in entry:
                return self._send(status, error_body(entry["error"], anthropic), entry.get("headers"))
            make = anthropic_reply if anthropic else openai_reply
            self._send(status, make(entry.get("reply", {}), json.loads(raw), counter["n"]), entry.get("headers"))

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--script", required=True, type=Path)
    parser.add_argument("--log", required=True, type=Path)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    script = Script(json.loads(args.script.read_text()), args.log)
    httpd = ThreadingHTTPServer(("127.0.0.1", args.port), handler(script))
    print(f"listening on http://127.0.0.1:{httpd.server_port}", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
