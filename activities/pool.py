"""The worker's outbound HTTP connections: model providers, `http` agents and `http` tools.

httpx keeps one connection pool per client, and its pool does work in proportion to the
connections it holds on every request and every reply it releases (it walks them all to find
expired, idle and usable ones). With a hundred model calls in flight on one client that walk
was a fifth of a model-bound worker's CPU, and at several hundred it starved the event loop
until heartbeats and connects timed out. So the connections are spread over small clients
(`SHARD` connections each): a request goes to the first client with a free connection, a new
client is opened when all are busy, up to `max_connections` in all. Every client shares one TLS
context, and none keeps cookies: one run's service must not see what another run's set.

httpx never retries by itself: Temporal owns retries.
"""

from __future__ import annotations

import http.cookiejar
import os
import ssl
from typing import Any

import httpx

from ensemble.spec.errors import InputError

SHARD = 4  # connections per client: a pool this small costs next to nothing to walk
DEFAULT_MAX_CONNECTIONS = 1000


def max_connections() -> int:
    """Open (and kept-alive) connections per worker process, for each of the model providers
    (together) and the `http` agents: ENSEMBLE_LLM_MAX_CONNECTIONS, else 1000."""
    raw = os.environ.get("ENSEMBLE_LLM_MAX_CONNECTIONS", "").strip()
    if not raw:
        return DEFAULT_MAX_CONNECTIONS
    try:
        value = int(raw)
        if value < 1:
            raise ValueError
    except ValueError:  # the worker refuses it when it starts (ensemble/runtime/worker.py)
        raise InputError(f"ENSEMBLE_LLM_MAX_CONNECTIONS={raw!r} is not a positive number of connections") from None
    return value


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


class _Shard:
    __slots__ = ("client", "size", "busy")

    def __init__(self, client: httpx.AsyncClient, size: int) -> None:
        self.client = client
        self.size = size
        self.busy = 0


class Pool:
    """Up to `limit` connections over clients of `shard` connections each, opened on demand."""

    def __init__(self, limit: int, shard: int = SHARD) -> None:
        self.limit = max(1, limit)
        self.shard = max(1, min(shard, self.limit))
        self.most = -(-self.limit // self.shard)  # ceil: clients at most
        self._tls: ssl.SSLContext | None = None
        self._shards: list[_Shard] = []

    def _open(self) -> _Shard:
        if self._tls is None:
            self._tls = httpx.create_ssl_context()
        size = min(self.shard, self.limit - self.shard * len(self._shards))
        client = httpx.AsyncClient(
            follow_redirects=False,
            verify=self._tls,
            cookies=http.cookiejar.CookieJar(policy=_NoCookies()),
            limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
        )
        shard = _Shard(client, size)
        self._shards.append(shard)
        return shard

    def _pick(self) -> _Shard:
        for shard in self._shards:
            if shard.busy < shard.size:
                return shard
        if len(self._shards) < self.most:
            return self._open()
        return min(self._shards, key=lambda s: s.busy)  # all full: wait in the least busy

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        """POST and read the whole reply (its connection is free again when this returns)."""
        shard = self._pick()
        shard.busy += 1
        try:
            return await shard.client.post(url, **kwargs)
        finally:
            shard.busy -= 1

    @property
    def clients(self) -> int:
        return len(self._shards)

    async def aclose(self) -> None:
        shards, self._shards = self._shards, []
        for shard in shards:
            await shard.client.aclose()


_pools: dict[str, Pool] = {}


def pool(name: str) -> Pool:
    """The worker process's pool `name` ("models": providers and `http` tools; "agents": `http`
    agents), made on first use."""
    found = _pools.get(name)
    if found is None:
        found = _pools[name] = Pool(max_connections())
    return found
