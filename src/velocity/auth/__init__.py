"""Who is calling: bearer JWTs with the claims Supabase Auth puts in its tokens.

Users present HS256 access tokens (``sub``, ``aud=authenticated``, ``exp``, ``iss``); agents present
tokens we mint for one preview (role ``agent``). Locally the secret is generated on first start.
"""

from velocity.auth.tokens import AGENT_ROLE, Caller, TokenIssuer, load_or_create_secret

__all__ = ["AGENT_ROLE", "Caller", "TokenIssuer", "load_or_create_secret"]
