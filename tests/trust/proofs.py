"""Helpers for decision proofs in tests: local keys in the test server's state directory, and
tokens signed for chosen (possibly wrong) bindings."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt

from ensemble.identity import keys
from ensemble.logic.proofs import LOCAL_AUDIENCE, LOCAL_ISSUER, binding
from ensemble.spec import GateDecision


def ensure_keys(*names: str) -> None:
    keys.init_keys(list(names))


def token(
    signer: str,
    decision: GateDecision,
    *,
    run: str,
    gate: str,
    round_: int = 1,
    tier: int = 1,
    digest: str = "",
    sub: str | None = None,
    ttl: int = 600,
    jti: str | None = None,
    **override: Any,
) -> str:
    """A proof of `decision` signed with `signer`'s local key, claiming to be `sub` (default: the signer)."""
    bound = {**binding(run, gate, round_, tier, decision, digest), **override}
    key = keys._load_private(signer)
    from jwt.algorithms import OKPAlgorithm

    jwk = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    now = int(time.time())
    claims = {
        "iss": LOCAL_ISSUER,
        "aud": LOCAL_AUDIENCE,
        "sub": sub or signer,
        "iat": now,
        "exp": now + ttl,
        "jti": jti or uuid.uuid4().hex,
        "ensemble": bound,
    }
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": keys._key_id(signer, jwk)})
