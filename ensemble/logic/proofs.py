"""Proven decisions: what a decision's proof must bind, and checking a proof.

A proof is a JWT (PyJWT on `cryptography`: EdDSA, RS256 or ES256). Its claims name the approver
(`sub`, or the identity provider's subject claim), `iss`, `aud`, `exp`, a unique `jti`, and bind
the decision to one run, gate, round, tier, decision, comment and the digest of what the gate
shows: either as an `ensemble` claim holding those fields, or as the OIDC `nonce` set to the
binding's hash (so a token from an organisation's identity provider can carry it).

Pure and deterministic given the token, the public keys recorded for the tier and the time passed
in (the workflow passes `workflow.now()`), so the update validator runs it and a replay or an
offline audit reaches the same verdict.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jwt

from ensemble.spec.gate import GateDecision, TierTrust

LOCAL_ISSUER = "ensemble:local"
LOCAL_AUDIENCE = "ensemble"
ALGORITHMS = ("EdDSA", "RS256", "ES256")
MAX_CLOCK_SKEW_S = 120


class ProofRefused(ValueError):
    """A proof that does not prove this decision; the message says why."""


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def digest(value: Any) -> str:
    """sha256 of the canonical JSON of what a gate shows (what the approver saw)."""
    return "sha256:" + hashlib.sha256(canonical(value).encode()).hexdigest()


def binding(
    run_id: str, gate: str, round_: int, tier: int, decision: GateDecision | dict[str, Any], shown_digest: str
) -> dict[str, Any]:
    """The fields a proof binds a decision to."""
    d = decision if isinstance(decision, dict) else decision.model_dump()
    return {
        "run": run_id,
        "gate": gate,
        "round": round_,
        "tier": tier,
        "decision": d["decision"],
        "comment": digest(d.get("comment") or ""),
        "digest": shown_digest,
    }


def binding_hash(bound: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(bound).encode()).hexdigest()


@dataclass
class Verified:
    subject: str
    key_id: str
    issuer: str
    jti: str
    expires: int


def _keys_for(token: str, trust: TierTrust) -> tuple[list[dict[str, Any]], dict[str, Any], str | None, list[str]]:
    """The candidate public keys, the verification options and the subject claim for a token."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError as err:
        raise ProofRefused(f"the proof is not a signed token: {err}") from None
    if header.get("alg") not in ALGORITHMS:
        raise ProofRefused(
            f"the proof's algorithm {header.get('alg')!r} is not accepted (use one of {', '.join(ALGORITHMS)})"
        )
    kid = header.get("kid")
    iss = claims.get("iss")
    if iss == LOCAL_ISSUER:
        subject = claims.get("sub")
        keys = trust.keys.get(str(subject), [])
        if not keys:
            with_keys = ", ".join(sorted(trust.keys)) or "none"
            raise ProofRefused(f"no key is recorded for '{subject}' at this tier (approvers with keys: {with_keys})")
        options = {"issuer": LOCAL_ISSUER, "audience": LOCAL_AUDIENCE, "subject_claim": "sub", "groups_claim": None}
        algorithms = ["EdDSA"]
    else:
        issuer = next((i for i in trust.issuers if i.issuer == iss), None)
        if issuer is None:
            raise ProofRefused(f"the proof's issuer {iss!r} is not trusted by this run's workers")
        keys = list(issuer.jwks.get("keys", []))
        options = {
            "issuer": issuer.issuer,
            "audience": issuer.audience,
            "subject_claim": issuer.subject_claim,
            "groups_claim": issuer.groups_claim,
        }
        algorithms = [a for a in issuer.algorithms if a in ALGORITHMS]
    if kid is not None:
        keys = [k for k in keys if k.get("kid") == kid]
        if not keys:
            raise ProofRefused(f"the proof is signed with key {kid!r}, which is not a recorded key of its signer")
    return keys, options, kid, algorithms


def recorded(token: str) -> Verified:
    """What an already-verified proof says (read back from history, not checked again). The subject
    is the decision's `by`, which the verified proof named."""
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})
    return Verified(
        subject=str(claims.get("sub") or ""),
        key_id=str(header.get("kid") or ""),
        issuer=str(claims.get("iss") or ""),
        jti=str(claims.get("jti") or ""),
        expires=int(claims.get("exp") or 0),
    )


def verify(
    token: str, decision: GateDecision, expected: dict[str, Any], trust: TierTrust, now: datetime, seen: set[str]
) -> Verified:
    """Check `token` proves `decision` as bound by `expected` (see `binding`); ProofRefused if not."""
    keys, options, kid, algorithms = _keys_for(token, trust)
    claims: dict[str, Any] | None = None
    used: dict[str, Any] = {}
    for jwk in keys:
        try:
            key = jwt.PyJWK(jwk).key
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=options["audience"],
                issuer=options["issuer"],
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "require": ["exp", "jti"]},
            )  # the clock is the workflow's, checked below
            used = jwk
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError as err:
            raise ProofRefused(f"the proof is not valid: {err}") from None
    if claims is None:
        raise ProofRefused("the proof's signature does not match a recorded key of its signer")
    subject = claims.get(options["subject_claim"])
    if not isinstance(subject, str) or not subject:
        raise ProofRefused(f"the proof has no '{options['subject_claim']}' claim naming the approver")
    if subject != decision.by:
        raise ProofRefused(f"the proof is signed for '{subject}', not '{decision.by}'")
    stamp = now.timestamp()
    if float(claims["exp"]) <= stamp:
        raise ProofRefused("the proof has expired: sign the decision again")
    if isinstance(claims.get("iat"), (int, float)) and claims["iat"] > stamp + MAX_CLOCK_SKEW_S:
        raise ProofRefused("the proof is issued in the future")
    jti = str(claims["jti"])
    if jti in seen:
        raise ProofRefused("the proof was already used (its jti is on this run's record): sign the decision again")
    bound = claims.get("ensemble")
    if isinstance(bound, dict):
        for field in ("run", "gate", "round", "tier", "decision", "comment", "digest"):
            if bound.get(field) != expected[field]:
                raise ProofRefused(f"the proof is for another {field}: {bound.get(field)!r}, not {expected[field]!r}")
    elif claims.get("nonce") != binding_hash(expected):
        raise ProofRefused(
            "the proof does not bind this decision (no 'ensemble' claim, and its nonce is not this decision's hash)"
        )
    if subject not in trust.people:
        groups = claims.get(options["groups_claim"]) if options["groups_claim"] else None
        if not (isinstance(groups, list) and any(g in trust.groups for g in groups)):
            raise ProofRefused(f"'{subject}' is not an approver of this tier")
    return Verified(
        subject=subject,
        key_id=str(used.get("kid") or kid or ""),
        issuer=options["issuer"],
        jti=jti,
        expires=int(claims["exp"]),
    )
