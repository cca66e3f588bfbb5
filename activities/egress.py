"""Egress control: where `http` agents, `http` tools and model providers may connect.

A worker connects only to:
- the model providers it is configured for: OPENAI_BASE_URL (default https://api.openai.com/v1),
  ANTHROPIC_BASE_URL (default https://api.anthropic.com), OLLAMA_BASE_URL (default
  http://127.0.0.1:11434/v1) and AZURE_OPENAI_ENDPOINT when set;
- the hosts listed in `ENSEMBLE_EGRESS_ALLOW` (or `python worker.py --egress-allow`), comma
  separated: `host:port`, `host` (any port), `[v6addr]:port` or a URL (`https://host:port/...`).

The host of every URL is resolved first and each address it resolves to is checked, so another
spelling of an address (`0x7f000001`, `2130706433`, `[::ffff:127.0.0.1]`) is the address it
names. Even when a host is listed, these are refused unless that exact host and port is listed:
link-local addresses (169.254.0.0/16, fe80::/10), cloud metadata services, unspecified, multicast
and broadcast addresses, the Temporal server's ports and the worker's own ports (metrics). A
refusal is non-retryable (`EgressRefused`): retrying cannot change the policy.

Written here rather than taken from a library: the check needs this worker's own facts (its
providers' base URLs, the Temporal server's and its own ports) and runs on httpx's URL parsing
and the event loop's resolver, a few dozen lines over the standard `ipaddress` module.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import socket
import time
from dataclasses import dataclass

import httpx
from temporalio.exceptions import ApplicationError

EGRESS_ALLOW = "ENSEMBLE_EGRESS_ALLOW"
IP = ipaddress.IPv4Address | ipaddress.IPv6Address
METADATA_HOSTS = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
)
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "169.254.170.2")
)
_PROVIDERS = (
    ("OPENAI_BASE_URL", "https://api.openai.com/v1"),
    ("ANTHROPIC_BASE_URL", "https://api.anthropic.com"),
    ("OLLAMA_BASE_URL", "http://127.0.0.1:11434/v1"),
    ("AZURE_OPENAI_ENDPOINT", None),
)
_protected: set[tuple[str, int]] = set()  # (host, port) of the Temporal server and this worker's own endpoints


@dataclass(frozen=True)
class Entry:
    host: str  # lower case, no brackets
    port: int | None  # None: any port
    source: str  # where the entry came from, for messages


@functools.lru_cache(maxsize=256)  # read on every call an agent makes; a pure function of the text
def _split(item: str) -> tuple[str, int | None]:
    item = item.strip()
    if "://" in item:
        url = httpx.URL(item)
        return url.host.lower(), url.port or (443 if url.scheme == "https" else 80)
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        return host.lower(), int(rest[1:]) if rest.startswith(":") and rest[1:] else None
    if item.count(":") == 1:
        host, _, port = item.partition(":")
        return host.lower(), int(port) if port and port != "*" else None
    return item.lower(), None  # a name, an IPv4 address or a bare IPv6 address: any port


def entries() -> list[Entry]:
    """The allow-list of this worker: configured providers, then ENSEMBLE_EGRESS_ALLOW."""
    found: list[Entry] = []
    for var, default in _PROVIDERS:
        value = os.environ.get(var, "").strip() or default
        if value:
            host, port = _split(value)
            found.append(Entry(host, port, var))
    for item in os.environ.get(EGRESS_ALLOW, "").split(","):
        if item.strip():
            try:
                host, port = _split(item)
            except ValueError:
                raise ApplicationError(
                    f"{EGRESS_ALLOW}: {item.strip()!r} is not host:port, host or a URL",
                    type="EgressRefused",
                    non_retryable=True,
                ) from None
            found.append(Entry(host, port, EGRESS_ALLOW))
    return found


def protect(address: str) -> None:
    """Refuse egress to `address` (host:port) unless it is listed exactly: the Temporal server,
    the embedded server's Web UI, this worker's metrics endpoint."""
    host, port = _split(address)
    if port is not None:
        _protected.add((host, port))


def _ip(text: str) -> IP | None:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


async def _resolve(host: str, port: int) -> set[IP]:
    literal = _ip(host)
    if literal is not None:
        return {literal}
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return {ip for ip in (_ip(str(info[4][0])) for info in infos) if ip is not None}


_resolved: dict[str, tuple[float, set[IP]]] = {}
_TTL_S = 30.0


async def _addresses(entry: Entry) -> set[IP]:
    """The addresses an allow-list entry names (a name's answer kept for 30 s)."""
    literal = _ip(entry.host)
    if literal is not None:
        return {literal}
    now = time.monotonic()
    cached = _resolved.get(entry.host)
    if cached is None or now - cached[0] > _TTL_S:
        try:
            found = await _resolve(entry.host, entry.port or 80)
        except OSError:
            found = set()
        cached = _resolved[entry.host] = (now, found)
    return cached[1]


def _special(host: str, ip: IP, port: int) -> str | None:
    """Why this address is refused unless listed exactly, or None."""
    if host in METADATA_HOSTS or ip in METADATA_ADDRESSES:
        return "a cloud metadata service"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_unspecified or ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255"):
        return "not a host address"
    for p_host, p_port in _protected:
        p_ip = _ip(p_host)
        local = p_host == "localhost" or (p_ip is not None and (p_ip.is_loopback or p_ip.is_unspecified))
        if p_port == port and (p_host == host or p_ip == ip or (local and ip.is_loopback)):
            return "a port of the Temporal server or of this worker"
    return None


@functools.lru_cache(maxsize=1024)
def _where(url: str) -> tuple[str, str, int]:
    """Scheme, host (lower case) and port of `url` (cached: agents call the same few URLs)."""
    parsed = httpx.URL(url)
    return parsed.scheme, parsed.host.lower(), parsed.port or (443 if parsed.scheme == "https" else 80)


async def check_url(url: str, who: str) -> None:
    """Raise a non-retryable `EgressRefused` unless this worker may connect to `url`."""

    def refuse(why: str, hint: str = "") -> ApplicationError:
        return ApplicationError(
            f"{who}: egress to {url_text} refused: {why}{hint}", type="EgressRefused", non_retryable=True
        )

    url_text = url.split("?", 1)[0][:200]
    try:
        scheme, host, port = _where(url)
    except (httpx.InvalidURL, ValueError):
        raise refuse("not a URL") from None
    if scheme not in ("http", "https") or not host:
        raise refuse("only http and https URLs with a host are allowed")
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if host in METADATA_HOSTS and not any(e.host == host and e.port == port for e in entries()):
        raise refuse(
            f"{host} is a cloud metadata service", f"; only an entry naming exactly {where} in {EGRESS_ALLOW} allows it"
        )
    try:
        resolved = await _resolve(host, port)
    except OSError:
        raise ApplicationError(f"{who}: cannot resolve {host}", type="Unreachable") from None
    if not resolved:
        raise refuse(f"{host} resolves to no address")
    allow = entries()
    hint = f"; list {where} in {EGRESS_ALLOW} (or --egress-allow) if this worker may call it"
    for ip in resolved:
        exact = [e for e in allow if e.port == port and (e.host == host or _ip(e.host) == ip)]
        special = _special(host, ip, port)
        if special and not exact:
            raise refuse(
                f"{host} ({ip}) is {special}", f"; only an entry naming exactly {where} in {EGRESS_ALLOW} allows it"
            )
        if exact:
            continue
        candidates = [e for e in allow if e.port in (None, port)]
        if any(e.host == host for e in candidates):
            continue
        for entry in sorted(candidates, key=lambda e: _ip(e.host) is None):  # addresses first, then names
            if ip in await _addresses(entry):
                break
        else:
            raise refuse(f"{where} ({ip}) is not on this worker's egress allow-list", hint)
