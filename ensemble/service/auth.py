"""Who is calling the service and what they may do.

- Bearer tokens are verified as decisions' proofs are (ensemble.logic.proofs): a local token from
  `starter.py keys token USER` (issuer `ensemble:local`, signed with USER's key from `keys init`,
  its public key in the trusted keys file), or an identity provider's token (an issuer of the
  trusted keys file, its keys from `jwks_file`). The audience is the service's
  (`ENSEMBLE_SERVICE_AUDIENCE`, default `ensemble-service`), so a decision's proof is no bearer token.
- Roles (`ENSEMBLE_SERVICE_ROLES`, default `$ENSEMBLE_HOME/roles.yaml`): per user and per identity
  provider group, a list of `read`, `cancel`, `redrive`, `start:FLOW` or `start:*`. Approvers need no
  role to see and decide the gates waiting on them.
- Rate limits: an in-process token bucket per caller for starts and decisions.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import yaml

from ensemble.identity import keys
from ensemble.logic.proofs import ALGORITHMS, LOCAL_ISSUER, MAX_CLOCK_SKEW_S
from ensemble.spec.errors import InputError

AUDIENCE_ENV = "ENSEMBLE_SERVICE_AUDIENCE"
ROLES_ENV = "ENSEMBLE_SERVICE_ROLES"
DEFAULT_AUDIENCE = "ensemble-service"
TOKEN_TTL_S = 3600
PERMISSIONS = ("read", "cancel", "redrive")


class ServiceError(Exception):
    """An error answered as `{"error": {"code", "message"}}` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def audience() -> str:
    return os.environ.get(AUDIENCE_ENV) or DEFAULT_AUDIENCE


def local_token(name: str, ttl_s: int = TOKEN_TTL_S) -> str:
    """A bearer token for `name`, signed with their local key (`starter.py keys token NAME`)."""
    if not keys.has_local_key(name):
        raise InputError(
            f"'{name}' has no local key in {keys.private_dir()}: run `python starter.py keys init {name}` first"
        )
    now = int(time.time())
    claims = {
        "iss": LOCAL_ISSUER,
        "aud": audience(),
        "sub": name,
        "iat": now,
        "exp": now + ttl_s,
        "jti": uuid.uuid4().hex,
    }
    return keys.sign_claims(name, claims)


@dataclass
class Principal:
    subject: str
    issuer: str
    groups: list[str] = field(default_factory=list)
    token: str = ""

    @property
    def local(self) -> bool:
        return self.issuer == LOCAL_ISSUER


def _unauthorized(message: str) -> ServiceError:
    return ServiceError(401, "unauthenticated", message, {"WWW-Authenticate": 'Bearer realm="ensemble"'})


def verify_bearer(header: str | None) -> Principal:
    """The caller named by an `Authorization: Bearer TOKEN` header; 401 when it proves nobody."""
    if not header:
        raise _unauthorized(
            "no bearer token: send `Authorization: Bearer TOKEN` (`python starter.py keys token USER` offline)"
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("the Authorization header must be `Bearer TOKEN`")
    token = token.strip()
    try:
        head = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as err:
        raise _unauthorized(f"the bearer token is not a signed token: {err}") from None
    if head.get("alg") not in ALGORITHMS:
        raise _unauthorized(f"the bearer token's algorithm {head.get('alg')!r} is not accepted")
    iss = unverified.get("iss")
    trust = keys.read_trust()
    if iss == LOCAL_ISSUER:
        jwks = list(trust["keys"].get(str(unverified.get("sub")), []))
        subject_claim, groups_claim, algorithms = "sub", None, ["EdDSA"]
        if not jwks:
            raise _unauthorized(f"no key is recorded for '{unverified.get('sub')}' in {keys.trust_file()}")
    else:
        issuer = next((i for i in keys.tier_trust([], {}, "service").issuers if i.issuer == iss), None)
        if issuer is None:
            raise _unauthorized(f"the bearer token's issuer {iss!r} is not trusted (issuers of {keys.trust_file()})")
        jwks = list(issuer.jwks.get("keys", []))
        subject_claim, groups_claim = issuer.subject_claim, issuer.groups_claim
        algorithms = [a for a in issuer.algorithms if a in ALGORITHMS]
    kid = head.get("kid")
    candidates = [k for k in jwks if kid is None or k.get("kid") == kid]
    claims = None
    for jwk in candidates:
        try:
            claims = jwt.decode(
                token,
                jwt.PyJWK(jwk).key,
                algorithms=algorithms,
                audience=audience(),
                issuer=iss,
                leeway=MAX_CLOCK_SKEW_S,
                options={"require": ["exp"]},
            )
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.ExpiredSignatureError:
            raise _unauthorized("the bearer token has expired: get a new one") from None
        except jwt.InvalidAudienceError:
            raise _unauthorized(
                f"the bearer token is not for this service (its audience must be '{audience()}')"
            ) from None
        except jwt.PyJWTError as err:
            raise _unauthorized(f"the bearer token is not valid: {err}") from None
    if claims is None:
        raise _unauthorized("the bearer token's signature does not match a trusted key")
    subject = claims.get(subject_claim)
    if not isinstance(subject, str) or not subject:
        raise _unauthorized(f"the bearer token has no '{subject_claim}' claim naming the caller")
    groups = claims.get(groups_claim) if groups_claim else None
    return Principal(
        subject=subject,
        issuer=str(iss),
        groups=[str(g) for g in groups] if isinstance(groups, list) else [],
        token=token,
    )


class Roles:
    """The roles file, re-read when it changes."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._stamp: float | None = None
        self._data: dict[str, Any] = {"users": {}, "groups": {}}

    def file(self) -> Path:
        if self.path is not None:
            return self.path
        return Path(os.environ[ROLES_ENV]) if os.environ.get(ROLES_ENV) else keys.home() / "roles.yaml"

    def load(self) -> dict[str, Any]:
        path = self.file()
        try:
            stamp = path.stat().st_mtime
        except OSError:
            self._data, self._stamp = {"users": {}, "groups": {}}, None
            return self._data
        if stamp != self._stamp:
            try:
                data = yaml.safe_load(path.read_text()) or {}
            except (OSError, yaml.YAMLError) as err:
                raise ServiceError(
                    500, "roles_file", f"cannot read the roles file {path}: {str(err).splitlines()[0]}"
                ) from None
            if not isinstance(data, dict):
                raise ServiceError(500, "roles_file", f"{path}: the roles file needs `users:` and `groups:` mappings")
            self._data = {"users": dict(data.get("users") or {}), "groups": dict(data.get("groups") or {})}
            self._stamp = stamp
        return self._data

    def grants(self, who: Principal) -> set[str]:
        data = self.load()
        out = {str(g) for g in data["users"].get(who.subject) or []}
        for group in who.groups:
            out |= {str(g) for g in data["groups"].get(group) or []}
        return out

    def may(self, who: Principal, permission: str) -> bool:
        return permission in self.grants(who)

    def may_start(self, who: Principal, flow: str) -> bool:
        grants = self.grants(who)
        return "start:*" in grants or f"start:{flow}" in grants

    def require(self, who: Principal, permission: str, what: str) -> None:
        if not self.may(who, permission):
            raise ServiceError(
                403,
                "forbidden",
                f"'{who.subject}' may not {what}: the roles file ({self.file()}) grants no '{permission}'",
            )


class RateLimiter:
    """A token bucket per (caller, action): `rate` requests per `per` seconds, bursts up to `rate`."""

    def __init__(self, spec: str) -> None:
        rate, _, per = spec.partition("/")
        self.capacity = max(1.0, float(rate))
        self.refill = self.capacity / max(0.001, float(per or 60))
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, action: str) -> None:
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - then) * self.refill)
            if tokens < 1.0:
                wait = (1.0 - tokens) / self.refill
                self._buckets[key] = (tokens, now)
                message = f"too many {action} requests from '{key}': retry in {wait:.0f} s"
                raise ServiceError(429, "rate_limited", message, {"Retry-After": str(max(1, int(wait + 0.999)))})
            self._buckets[key] = (tokens - 1.0, now)
