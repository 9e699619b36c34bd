"""Who may call the API: Supabase-shaped tokens verified by JWKS or the legacy secret, nothing else."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.api.conftest import Orchestrator
from tests.api.test_previews_api import import_project


def claims(o: Orchestrator, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "alice", "aud": "authenticated", "role": "authenticated", "iss": o.runtime.issuer.issuer}
    return {**base, "iat": now, "exp": now + 600, **overrides}


async def status(o: Orchestrator, token: str) -> tuple[int, str]:
    response = await o.client.get("/v1/previews", headers={"Authorization": f"Bearer {token}"})
    return response.status_code, response.text


async def test_the_local_jwks_publishes_the_key_user_tokens_are_signed_with(
    orchestrator: Orchestrator,
) -> None:
    """Locally the orchestrator serves its JWKS; its ES256 user tokens carry that key's kid."""
    document = (await orchestrator.client.get("/auth/v1/.well-known/jwks.json")).json()
    (key,) = document["keys"]
    assert (key["kty"], key["crv"], key["alg"]) == ("EC", "P-256", "ES256")
    assert "d" not in key, "only the public half is published"
    token = orchestrator.token()
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": key["kid"], "typ": "JWT"}
    assert (await status(orchestrator, token))[0] == 200


async def test_legacy_hs256_user_tokens_are_accepted(orchestrator: Orchestrator) -> None:
    """Projects still on the legacy JWT secret keep working."""
    token = orchestrator.runtime.issuer.mint_user("alice", legacy=True)
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert (await status(orchestrator, token))[0] == 200


async def test_the_jwks_is_cached_and_refetched_only_for_an_unknown_key(orchestrator: Orchestrator) -> None:
    """Many requests, one JWKS fetch; a token with an unknown kid is refused without a fetch storm."""
    for _ in range(5):
        assert (await status(orchestrator, orchestrator.token()))[0] == 200
    jwks = orchestrator.runtime.verifier._jwks
    assert jwks is not None
    assert jwks.fetches == 1
    stranger = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(claims(orchestrator), stranger, algorithm="ES256", headers={"kid": "not-published"})
    for _ in range(3):
        code, body = await status(orchestrator, forged)
        assert code == 401
        assert "unknown key" in body
    assert jwks.fetches <= 2


def forged_tokens(o: Orchestrator) -> dict[str, str]:
    kid = o.runtime.signing_key.kid if o.runtime.signing_key else ""
    stranger_ec = ec.generate_private_key(ec.SECP256R1())
    stranger_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    secret = o.runtime.settings.supabase_jwt_secret
    assert secret is not None
    legacy = secret.get_secret_value()
    return {
        "signed by another key under our kid": jwt.encode(
            claims(o), stranger_ec, algorithm="ES256", headers={"kid": kid}
        ),
        "RS256 from an unknown key": jwt.encode(
            claims(o), stranger_rsa, algorithm="RS256", headers={"kid": "x"}
        ),
        "RS256 under our EC key's kid": jwt.encode(
            claims(o), stranger_rsa, algorithm="RS256", headers={"kid": kid}
        ),
        "alg none": jwt.encode(claims(o), None, algorithm="none"),  # type: ignore[arg-type]
        "HS384": jwt.encode(claims(o), legacy + "x" * 16, algorithm="HS384"),
        "the anon key": o.runtime.issuer.mint_anon(),
        "a service_role key": jwt.encode(
            {"iss": "supabase", "role": "service_role", "exp": int(time.time()) + 600},
            legacy,
            algorithm="HS256",
        ),
        "another issuer": jwt.encode(
            claims(o, iss="https://evil.supabase.co/auth/v1"), legacy, algorithm="HS256"
        ),
        "another audience": jwt.encode(claims(o, aud="something-else"), legacy, algorithm="HS256"),
        "expired": jwt.encode(claims(o, exp=int(time.time()) - 300), legacy, algorithm="HS256"),
        "no role": jwt.encode({k: v for k, v in claims(o).items() if k != "role"}, legacy, algorithm="HS256"),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "signed by another key under our kid",
        "RS256 from an unknown key",
        "RS256 under our EC key's kid",
        "alg none",
        "HS384",
        "the anon key",
        "a service_role key",
        "another issuer",
        "another audience",
        "expired",
        "no role",
    ],
)
async def test_forged_or_wrong_tokens_get_401(orchestrator: Orchestrator, kind: str) -> None:
    """Every way a token can be wrong is a 401 with a message, and nothing is created."""
    code, body = await status(orchestrator, forged_tokens(orchestrator)[kind])
    assert code == 401, kind
    assert body.startswith('{"error":{"code":"unauthorized"')


async def test_operators_see_every_users_previews_and_machines_and_others_get_403(
    orchestrator: Orchestrator,
) -> None:
    """The admin endpoints need app_metadata.velocity_role = operator; a plain user gets 403."""
    await import_project(orchestrator, "app", user="bob")
    bob = await orchestrator.client.post(
        "/v1/previews", json={"project_id": "app"}, headers=orchestrator.auth("bob")
    )
    await orchestrator.runtime.previews.settled(bob.json()["id"], timeout=5)
    operator = {"Authorization": f"Bearer {orchestrator.runtime.issuer.mint_user('ops', operator=True)}"}
    listed = (await orchestrator.client.get("/v1/admin/previews", headers=operator)).json()
    assert [p["id"] for p in listed["previews"]] == [bob.json()["id"]]
    machines = (await orchestrator.client.get("/v1/admin/machines", headers=operator)).json()["machines"]
    assert [(m["preview_id"], m["user_id"]) for m in machines] == [(bob.json()["id"], "bob")]
    assert (await orchestrator.client.post("/v1/admin/maintenance", headers=operator)).json() == {"done": []}
    for path in ("/v1/admin/previews", "/v1/admin/machines"):
        refused = await orchestrator.client.get(path, headers=orchestrator.auth("bob"))
        assert refused.status_code == 403
        assert "operators only" in refused.json()["error"]["message"]
