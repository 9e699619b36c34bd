"""Who is calling: bearer JWTs with the claims Supabase Auth puts in its tokens.

Users present Supabase Auth access tokens (``sub``, ``aud=authenticated``, ``exp``, ``iss``), signed
with an asymmetric key published as a JWKS or with the legacy HS256 secret; agents present tokens we
mint for one preview (role ``agent``). Locally the orchestrator generates both keys on first start
and serves the JWKS itself.
"""

from velocity.auth.jwks import JwksCache
from velocity.auth.keys import SigningKey
from velocity.auth.tokens import AGENT_ROLE, Caller, TokenIssuer, caller_from_claims, load_or_create_secret
from velocity.auth.verifier import TokenVerifier

__all__ = [
    "AGENT_ROLE",
    "Caller",
    "JwksCache",
    "SigningKey",
    "TokenIssuer",
    "TokenVerifier",
    "caller_from_claims",
    "load_or_create_secret",
]
