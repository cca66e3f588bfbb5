"""Approver keys on disk: the private keys people sign decisions with, and the public keys and
identity providers workers trust.

- Private keys: `$ENSEMBLE_HOME/keys/NAME.pem` (default ./.ensemble), owner-only (0600, in a 0700
  directory). `starter.py keys init [NAME...]` makes them (default: everyone in the approvers file).
- Trusted keys: `$ENSEMBLE_APPROVER_KEYS`, default `$ENSEMBLE_HOME/approver-keys.json`:

      {"keys": {"alice": [{"kty": "OKP", "crv": "Ed25519", "x": "...", "kid": "alice-1a2b3c4d"}]},
       "issuers": [{"issuer": "https://idp.example.com", "audience": "ensemble",
                    "jwks_file": "/etc/ensemble/idp-jwks.json", "subject_claim": "email",
                    "groups_claim": "groups"}]}

  Workers read it when a gate tier opens and record what they read in the run's history.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from ensemble.logic.proofs import LOCAL_AUDIENCE, LOCAL_ISSUER
from ensemble.spec.errors import InputError
from ensemble.spec.gate import IssuerTrust, TierTrust

KEYS_ENV = "ENSEMBLE_APPROVER_KEYS"
PROOF_TTL_S = 600


def home() -> Path:
    return Path(os.environ.get("ENSEMBLE_HOME") or ".ensemble").resolve()


def private_dir() -> Path:
    return home() / "keys"


def trust_file() -> Path:
    return Path(os.environ[KEYS_ENV]) if os.environ.get(KEYS_ENV) else home() / "approver-keys.json"


def _key_id(name: str, jwk: dict[str, Any]) -> str:
    return f"{name}-{hashlib.sha256(jwk['x'].encode()).hexdigest()[:8]}"


def read_trust(path: Path | None = None) -> dict[str, Any]:
    path = path or trust_file()
    if not path.exists():
        return {"keys": {}, "issuers": []}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the approver keys file {path}: {err}") from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("keys", {}), dict)
        or not isinstance(data.get("issuers", []), list)
    ):
        raise InputError(f'{path}: the approver keys file needs {{"keys": {{NAME: [JWK...]}}, "issuers": [...]}}')
    data.setdefault("keys", {})
    data.setdefault("issuers", [])
    return data


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)


def init_keys(names: list[str]) -> list[tuple[str, str, bool]]:
    """Make a local Ed25519 key for each name that has none; publish every public key in the
    trusted keys file. Returns (name, key id, created) per name."""
    trust = read_trust()
    done = []
    for name in names:
        pem = private_dir() / f"{name}.pem"
        created = not pem.exists()
        if created:
            key = Ed25519PrivateKey.generate()
            _write_private(
                pem,
                key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                ),
            )
        else:
            key = _load_private(name)
        jwk = _public_jwk(key)
        jwk["kid"] = _key_id(name, jwk)
        listed = trust["keys"].setdefault(name, [])
        if not any(k.get("kid") == jwk["kid"] for k in listed):
            listed.append(jwk)
        done.append((name, jwk["kid"], created))
    path = trust_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(trust, indent=2) + "\n")
    return done


def _public_jwk(key: Ed25519PrivateKey) -> dict[str, Any]:
    return OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)


def _load_private(name: str) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key((private_dir() / f"{name}.pem").read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(f"{private_dir() / f'{name}.pem'} is not an Ed25519 private key")
    return key


def has_local_key(name: str) -> bool:
    return (private_dir() / f"{name}.pem").exists()


def sign_local(name: str, bound: dict[str, Any], ttl_s: int = PROOF_TTL_S) -> str:
    """A proof of `name`'s decision, signed with their local key (see ensemble.logic.proofs)."""
    now = int(time.time())
    claims = {
        "iss": LOCAL_ISSUER,
        "aud": LOCAL_AUDIENCE,
        "sub": name,
        "iat": now,
        "exp": now + ttl_s,
        "jti": uuid.uuid4().hex,
        "ensemble": bound,
    }
    return sign_claims(name, claims)


def sign_claims(name: str, claims: dict[str, Any]) -> str:
    """A token with `claims`, signed with `name`'s local key (a decision's proof, the service's bearer tokens)."""
    key = _load_private(name)
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": _key_id(name, _public_jwk(key))})


def tier_trust(people: list[str], groups: dict[str, list[str]], source: str) -> TierTrust:
    """What a worker trusts for one tier: the keys of its people, and every identity provider."""
    trust = read_trust()
    issuers = []
    for i, entry in enumerate(trust["issuers"]):
        entry = dict(entry)
        if "jwks_file" in entry:
            try:
                entry["jwks"] = json.loads(Path(entry.pop("jwks_file")).read_text())
            except (OSError, ValueError) as err:
                raise InputError(f"{trust_file()}: issuers[{i}]: cannot read its jwks_file: {err}") from None
        try:
            issuers.append(IssuerTrust.model_validate(entry))
        except ValueError as err:
            raise InputError(f"{trust_file()}: issuers[{i}]: {err}") from None
    keys = {p: list(trust["keys"][p]) for p in people if trust["keys"].get(p)}
    return TierTrust(people=people, keys=keys, issuers=issuers, groups=groups, source=source)
