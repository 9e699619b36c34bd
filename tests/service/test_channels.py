"""Who may use the local Realtime hub's preview channels: the owner, and the project's own agents."""

from __future__ import annotations

import jwt
import pytest

from tests.service.world import ALICE, BOB, World
from velocity.auth import TokenIssuer, TokenVerifier
from velocity.domain import Forbidden, Unauthorized
from velocity.service.channels import ChannelAccess

SECRET = "s" * 40  # the world's issuer secret


@pytest.fixture
def issuer() -> TokenIssuer:
    return TokenIssuer(SECRET, issuer="http://127.0.0.1:8000/auth/v1")


@pytest.fixture
def access(world: World, issuer: TokenIssuer) -> ChannelAccess:
    verifier = TokenVerifier(issuer=issuer.issuer, hs256_secret=SECRET, jwks=None)
    return ChannelAccess(verifier, world.store)


@pytest.mark.parametrize(
    ("who", "topic"),
    [
        ("owner", "preview:alice-one"),
        ("agent of the project", "preview:alice-one"),
        ("anon", "room:lobby"),
        ("another user", "room:lobby"),
    ],
)
async def test_the_owner_and_the_projects_agent_may_join_its_preview_channel(
    world: World, access: ChannelAccess, issuer: TokenIssuer, who: str, topic: str
) -> None:
    """Preview channels for their people; any other topic for any verified token."""
    preview, _ = await world.service.create(ALICE, "alice-one")
    token = {
        "owner": issuer.mint_user("alice", legacy=True),
        "agent of the project": issuer.mint_agent(
            preview_id=preview.id, project_id="alice-one", ttl_seconds=60
        ),
        "anon": issuer.mint_anon(),
        "another user": issuer.mint_user("bob", legacy=True),
    }[who]
    await access.authorize(await access.verify(token), topic)


@pytest.mark.parametrize(
    "who",
    ["anon", "another user", "agent of another project", "owner of a missing project"],
)
async def test_nobody_else_may_join_a_preview_channel(
    world: World, access: ChannelAccess, issuer: TokenIssuer, who: str
) -> None:
    """The anon key alone, other users and other projects' agents are refused with Forbidden."""
    bobs, _ = await world.service.create(BOB, "bob-one")
    token, topic = {
        "anon": (issuer.mint_anon(), "preview:alice-one"),
        "another user": (issuer.mint_user("bob", legacy=True), "preview:alice-one"),
        "agent of another project": (
            issuer.mint_agent(preview_id=bobs.id, project_id="bob-one", ttl_seconds=60),
            "preview:alice-one",
        ),
        "owner of a missing project": (issuer.mint_user("alice", legacy=True), "preview:alice-nothing"),
    }[who]
    claims = await access.verify(token)
    with pytest.raises(Forbidden):
        await access.authorize(claims, topic)


@pytest.mark.parametrize(
    "claims",
    [{"role": "service_role"}, {"role": "authenticated", "aud": "authenticated"}],
    ids=["service key", "user token without sub"],
)
async def test_other_tokens_are_refused_before_any_join(
    access: ChannelAccess, claims: dict[str, object]
) -> None:
    """A service key or a token naming nobody is Unauthorized: the hub answers 401 before the upgrade."""
    token = jwt.encode({"iss": "http://127.0.0.1:8000/auth/v1", "exp": 4102444800, **claims}, SECRET, "HS256")
    with pytest.raises(Unauthorized):
        await access.verify(token)


async def test_an_agent_token_ends_with_its_preview(
    world: World, access: ChannelAccess, issuer: TokenIssuer
) -> None:
    """Once its preview has ended, an agent's token neither connects nor joins, and the agent of the
    project's next preview gets in with its own token only."""
    first, _ = await world.service.create(ALICE, "alice-one")
    old = issuer.mint_agent(preview_id=first.id, project_id="alice-one", ttl_seconds=3600)
    claims = await access.verify(old)
    await world.service.delete(ALICE, first.id)
    with pytest.raises(Unauthorized, match="revoked"):
        await access.verify(old)
    with pytest.raises(Forbidden, match="revoked"):
        await access.authorize(claims, "preview:alice-one")
    second, _ = await world.service.create(ALICE, "alice-one")
    new = issuer.mint_agent(preview_id=second.id, project_id="alice-one", ttl_seconds=3600)
    await access.authorize(await access.verify(new), "preview:alice-one")
    forged = issuer.mint_agent(preview_id=second.id, project_id="alice-two", ttl_seconds=3600)
    with pytest.raises(Unauthorized):
        await access.verify(forged)
