"""An organisation's identity provider: its tokens (ES256, keys from a JWKS file named in the
trusted keys file) are the service's bearer tokens, their groups claim grants roles, and a decision
carries a second token from it whose nonce binds the decision (GET .../binding), verified in the run."""

from __future__ import annotations

import json
import time
import uuid

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from temporalio.worker import Replayer

from ensemble.identity import keys
from ensemble.logic.proofs import binding, binding_hash
from ensemble.runtime.converter import data_converter
from ensemble.workflows.flow import EnsembleFlow
from tests.service.conftest import CONTRACT, Service, park, wait_for

ISSUER = "https://idp.example.test"


def idp_token(key, kid: str, audience: str, **claims) -> str:
    now = int(time.time())
    body = {
        "iss": ISSUER,
        "aud": audience,
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        "sub": "u-1",
        **claims,
    }
    return jwt.encode(body, key, algorithm="ES256", headers={"kid": kid})


def trust_issuer(tmp_path, monkeypatch):
    """A test identity provider's signing key, its issuer trusted by the service and the worker."""
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    jwk["kid"] = "idp-1"
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    trust = keys.read_trust()
    trust["issuers"] = [
        {
            "issuer": ISSUER,
            "audience": "ensemble",
            "jwks_file": str(tmp_path / "jwks.json"),
            "subject_claim": "preferred_username",
            "groups_claim": "groups",
        }
    ]
    (tmp_path / "trust.json").write_text(json.dumps(trust))
    monkeypatch.setenv("ENSEMBLE_APPROVER_KEYS", str(tmp_path / "trust.json"))  # the service's and the worker's
    return key


async def test_identity_provider_tokens_roles_and_proven_decisions(service: Service, tmp_path, monkeypatch):
    key = trust_issuer(tmp_path, monkeypatch)
    service.roles_file.write_text(service.roles_file.read_text() + "groups:\n  legal-team: [read]\n")
    run_id = await park(service, "contract_review", {"text": CONTRACT})

    bearer = idp_token(key, "idp-1", "ensemble-service", preferred_username="bob", groups=["legal-team"])
    async with service.http(token=bearer) as bob:
        me = (await bob.get("/api/whoami")).json()
        assert me == {"subject": "bob", "issuer": ISSUER, "groups": ["legal-team"], "grants": ["read"]}
        assert (await bob.get(f"/api/runs/{run_id}")).status_code == 200  # read, through the group
        unproven = await bob.post(f"/api/runs/{run_id}/gates/legal/decision", json={"decision": "approve"})
        assert unproven.status_code == 400 and unproven.json()["error"]["code"] == "proof_required"
        bound = (
            await bob.get(f"/api/runs/{run_id}/gates/legal/binding", params={"decision": "approve", "comment": "ok"})
        ).json()
        stranger = idp_token(key, "idp-1", "ensemble", preferred_username="mallory", nonce=bound["nonce"])
        wrong = await bob.post(
            f"/api/runs/{run_id}/gates/legal/decision", json={"decision": "approve", "comment": "ok", "proof": stranger}
        )
        assert wrong.status_code == 409 and "mallory" in wrong.json()["error"]["message"]  # the run refuses it
        proof = idp_token(key, "idp-1", "ensemble", preferred_username="bob", nonce=bound["nonce"])
        ok = await bob.post(
            f"/api/runs/{run_id}/gates/legal/decision", json={"decision": "approve", "comment": "ok", "proof": proof}
        )
        assert ok.status_code == 200 and ok.json()["status"] == "approved", ok.text
        audit = (await bob.get(f"/api/runs/{run_id}/decisions")).json()
        [decision] = [d for d in audit["decisions"] if d["verified"]]
        assert decision["by"] == "bob" and decision["subject"] == "bob"
    wrong_aud = idp_token(key, "idp-1", "ensemble", preferred_username="bob")  # a proof's audience is no bearer token
    async with service.http(token=wrong_aud) as http:
        r = await http.get("/api/whoami")
        assert r.status_code == 401 and "audience" in r.json()["error"]["message"]


async def test_a_member_of_the_tiers_group_by_the_groups_claim_approves(service: Service, tmp_path, monkeypatch):
    """zoe is in no approvers file and has no role: her token's groups claim names `legal`, the
    group the gate's tier names, so she sees the gate, reads it and decides; mallory, of another
    group, is refused and nothing of his is written to the run's history."""
    key = trust_issuer(tmp_path, monkeypatch)
    run_id = await park(service, "contract_review", {"text": CONTRACT})
    zoe_bearer = idp_token(key, "idp-1", "ensemble-service", preferred_username="zoe", groups=["legal"])
    mallory_bearer = idp_token(key, "idp-1", "ensemble-service", preferred_username="mallory", groups=["finance"])

    async with service.http(token=mallory_bearer) as mallory:
        assert run_id not in {row["run_id"] for row in (await mallory.get("/api/approvals")).json()}
        assert (await mallory.get(f"/api/runs/{run_id}")).status_code == 403
        assert (await mallory.get(f"/api/runs/{run_id}/gates/legal")).status_code == 403
        assert (await mallory.get(f"/api/runs/{run_id}/gates/legal/binding")).status_code == 403
        nonce = binding_hash(
            binding(run_id, "legal", 0, 1, {"decision": "approve", "comment": ""}, "")
        )  # whatever he signs, the service does not send it
        proof = idp_token(key, "idp-1", "ensemble", preferred_username="mallory", groups=["finance"], nonce=nonce)
        r = await mallory.post(f"/api/runs/{run_id}/gates/legal/decision", json={"decision": "approve", "proof": proof})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text
        assert "group:legal" in r.json()["error"]["message"]
    assert "mallory" not in (await service.client.history_json(run_id))

    async with service.http(token=zoe_bearer) as zoe:

        async def listed():
            rows = (await zoe.get("/api/approvals")).json()
            return [row for row in rows if row["run_id"] == run_id]

        [row] = await wait_for(listed)
        assert row["gate"] == "legal" and row["groups"] == ["legal"] and "zoe" not in row["approvers"]
        assert (await zoe.get(f"/api/runs/{run_id}")).status_code == 200
        assert (await zoe.get(f"/api/runs/{run_id}/gates/legal")).status_code == 200
        bound = (await zoe.get(f"/api/runs/{run_id}/gates/legal/binding", params={"comment": "fine"})).json()
        no_group = idp_token(key, "idp-1", "ensemble", preferred_username="zoe", nonce=bound["nonce"])
        r = await zoe.post(
            f"/api/runs/{run_id}/gates/legal/decision",
            json={"decision": "approve", "comment": "fine", "proof": no_group},
        )
        assert r.status_code == 409 and "not an approver" in r.json()["error"]["message"]  # the run judges the proof
        proof = idp_token(key, "idp-1", "ensemble", preferred_username="zoe", groups=["legal"], nonce=bound["nonce"])
        r = await zoe.post(
            f"/api/runs/{run_id}/gates/legal/decision", json={"decision": "approve", "comment": "fine", "proof": proof}
        )
        assert r.status_code == 200 and r.json()["status"] == "approved", r.text
        assert (await zoe.get(f"/api/runs/{run_id}")).status_code == 403  # decided: no longer hers to read
    [decision] = (await service.client.audit(run_id))["decisions"]  # re-verified from the history
    assert decision["by"] == "zoe" and decision["verified"], decision
    handle = service.client.temporal.get_workflow_handle(run_id)
    await handle.result()
    replayed = await Replayer(workflows=[EnsembleFlow], data_converter=data_converter()).replay_workflow(
        await handle.fetch_history()
    )  # the gate's published groups (a patch) and the group member's accepted decision replay
    assert replayed.replay_failure is None
