"""The worker's outbound HTTP pool (`ensemble.activities.pool`) against a real loopback server:
small clients opened on demand, never more connections than the limit, connections kept alive
and reused, and no cookies carried from one request to the next."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from ensemble.activities.pool import DEFAULT_MAX_CONNECTIONS, Pool, max_connections
from ensemble.spec.errors import InputError


@dataclass
class Server:
    """HTTP/1.1 with keep-alive; every reply waits `delay` seconds. Counts what clients did."""

    delay: float = 0.2
    port: int = 0
    connections: int = 0  # accepted, ever
    in_flight: int = 0
    peak: int = 0  # requests being answered at once
    cookies: list[str] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
                await reader.readexactly(int(headers.get("content-length", "0")))
                self.cookies.append(headers.get("cookie", ""))
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
                await asyncio.sleep(self.delay)
                self.in_flight -= 1
                body = b'{"ok": true}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nSet-Cookie: session=run-a; Path=/\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    listener = await asyncio.start_server(srv.serve, "127.0.0.1", 0)
    srv.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield srv


async def _wave(pool: Pool, srv: Server, n: int) -> None:
    replies = await asyncio.gather(*(pool.post(f"http://127.0.0.1:{srv.port}/v1/x", json={"i": i}) for i in range(n)))
    assert [r.json() for r in replies] == [{"ok": True}] * n


async def test_connections_never_exceed_the_limit_and_are_reused(server: Server) -> None:
    pool = Pool(limit=6, shard=4)
    try:
        await _wave(pool, server, 15)
        assert server.peak == 6  # the limit binds: the other nine waited for a free connection
        assert pool.clients == 2  # 4 + 2 connections
        assert server.connections == 6  # and every one was kept alive for the waiting requests
    finally:
        await pool.aclose()


async def test_clients_open_on_demand_and_stay_open(server: Server) -> None:
    pool = Pool(limit=1000, shard=4)
    try:
        await _wave(pool, server, 3)
        assert pool.clients == 1
        await _wave(pool, server, 15)
        assert server.peak == 15  # nothing waited
        assert pool.clients == 4
        opened = server.connections
        await _wave(pool, server, 15)
        assert server.connections == opened  # the second wave reused them all
    finally:
        await pool.aclose()


async def test_no_cookie_is_carried_between_requests(server: Server) -> None:
    pool = Pool(limit=2, shard=2)
    try:
        for _ in range(3):
            await _wave(pool, server, 2)
        assert server.cookies == [""] * 6  # every reply set one; no request sent it back
    finally:
        await pool.aclose()


@pytest.mark.parametrize("raw, want", [("", DEFAULT_MAX_CONNECTIONS), (" 250 ", 250)])
def test_the_limit_is_read_from_the_environment(monkeypatch, raw, want) -> None:
    monkeypatch.setenv("ENSEMBLE_LLM_MAX_CONNECTIONS", raw)
    assert max_connections() == want


@pytest.mark.parametrize("raw", ["lots", "0", "-5", "1.5"])
def test_a_malformed_limit_is_refused_in_one_line(monkeypatch, raw) -> None:
    monkeypatch.setenv("ENSEMBLE_LLM_MAX_CONNECTIONS", raw)
    with pytest.raises(InputError, match="ENSEMBLE_LLM_MAX_CONNECTIONS=.* is not a positive number") as err:
        max_connections()
    assert "\n" not in str(err.value)
