"""The model-bound benchmark's loopback model server: OpenAI chat completions with a set latency.

    python -m bench.modelserver --log REQUESTS.jsonl [--port N] [--latency S] [--jitter S]

It prints `listening on PORT` once ready. Every POST to `.../chat/completions` waits `latency`
seconds (plus a uniform random `jitter`), then answers with a short text reply. It is plain
asyncio (one coroutine per connection, HTTP/1.1 keep-alive), so 2,000 requests in flight cost no
threads. Every request is logged as one JSON line: `{"t", "done", "key"}` where `key` is the first
line of the request's last user message (the benchmark puts the run id and step there), so the
log says how many times each model call was paid for.

A request that asks for structured output (`response_format`) is answered with
`{"message": TEXT}` as its content, TEXT padded to `reply_bytes` (default: the short reply), which is
what a group chat's participants return (bench/longchat.py).

`POST /control` with a JSON body changes the server while it runs: `latency`, `jitter`,
`reply_bytes`, and
`kill` = `{"pid": P, "key": K, "when": "received"|"answered"}` sends SIGKILL to process P when a
request with key K is received (in flight) or has been answered (for the crash-cost scenario).
`GET /stats` returns `{"requests": n, "in_flight": n}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

REPLY_TEXT = "Noted. The next step can go on."


def _vocabulary(n: int = 3000) -> list[str]:
    """n made-up words of 1-4 syllables: replies of words drawn from them deflate about as well as
    prose does (about 2-3x), where one sentence repeated deflates 20x and more."""
    pick = random.Random(1)
    syllables = [c + v for c in "bcdfghklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]
    return ["".join(pick.choice(syllables) for _ in range(pick.randint(1, 4))) for _ in range(n)]


VOCABULARY = _vocabulary()


class ModelServer:
    def __init__(self, log: Path, latency: float = 0.0, jitter: float = 0.0) -> None:
        self.latency, self.jitter = latency, jitter
        self.log = log.open("a", buffering=1)
        self.kill: dict[str, Any] | None = None
        self.requests = self.in_flight = 0
        self.reply_bytes = 0
        self.varied = False  # padded replies of words drawn at random (compress like prose), not one sentence again
        self._rng = random.Random(7)

    def _maybe_kill(self, key: str, when: str) -> None:
        k = self.kill
        if k and k.get("key") == key and k.get("when", "answered") == when:
            self.kill = None
            try:
                os.kill(int(k["pid"]), signal.SIGKILL)
            except ProcessLookupError:
                pass

    async def complete(self, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
        msgs = [m for m in body.get("messages", []) if m.get("role") == "user"]
        key = (msgs[-1].get("content") or "").split("\n", 1)[0] if msgs else ""
        self.requests += 1
        self.in_flight += 1
        t = time.time()
        self._maybe_kill(key, "received")
        try:
            delay = self.latency + (random.uniform(0, self.jitter) if self.jitter else 0.0)
            if delay > 0:
                await asyncio.sleep(delay)
        finally:
            self.in_flight -= 1
        n = self.requests
        content = REPLY_TEXT
        if body.get("response_format"):
            text = (
                REPLY_TEXT
                if self.reply_bytes <= len(REPLY_TEXT)
                else self._varied(self.reply_bytes)
                if self.varied
                else self._padded(self.reply_bytes)
            )
            content = json.dumps({"message": text})
        self.log.write(json.dumps({"t": t, "done": time.time(), "key": key}) + "\n")
        return {
            "id": f"chatcmpl-{n}", "object": "chat.completion", "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48},
        }, key  # fmt: skip

    def _varied(self, size: int) -> str:
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < size:
            words.append(self._rng.choice(VOCABULARY))
        return " ".join(words)[:size].rstrip()

    @staticmethod
    def _padded(size: int) -> str:
        words = (REPLY_TEXT + " ") * (size // (len(REPLY_TEXT) + 1) + 1)
        return words[:size].rstrip()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                raw = await reader.readexactly(int(headers.get("content-length") or 0))
                key, status = None, 200
                if method == "POST" and path.split("?")[0].endswith("/chat/completions"):
                    reply, key = await self.complete(json.loads(raw or b"{}"))
                elif method == "POST" and path == "/control":
                    change = json.loads(raw or b"{}")
                    for name in ("latency", "jitter"):
                        if name in change:
                            setattr(self, name, float(change[name]))
                    if "reply_bytes" in change:
                        self.reply_bytes = int(change["reply_bytes"])
                    if "varied" in change:
                        self.varied = bool(change["varied"])
                    if "kill" in change:
                        self.kill = change["kill"]
                    reply = {"latency": self.latency, "jitter": self.jitter, "reply_bytes": self.reply_bytes}
                elif method == "GET" and path == "/stats":
                    reply = {"requests": self.requests, "in_flight": self.in_flight}
                else:
                    reply, status = {"error": {"message": f"no route {path}"}}, 404
                data = json.dumps(reply).encode()
                writer.write(
                    f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
                if key is not None:
                    self._maybe_kill(key, "answered")
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


async def serve(args: argparse.Namespace) -> None:
    srv = ModelServer(args.log, args.latency, args.jitter)
    server = await asyncio.start_server(srv.handle, "127.0.0.1", args.port, backlog=4096)
    print(f"listening on {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.modelserver", description=__doc__.split("\n\n")[0])
    p.add_argument("--log", required=True, type=Path)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--jitter", type=float, default=0.0)
    asyncio.run(serve(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
