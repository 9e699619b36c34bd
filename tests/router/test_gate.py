"""What the router forwards to a preview: never our session cookie or the owner's token."""

from __future__ import annotations

from velocity.router.gate import Gate


def test_our_cookie_and_the_bearer_token_are_removed_and_the_apps_cookies_kept() -> None:
    """The preview's own cookies pass; ours and the Authorization header do not."""
    scope = {
        "type": "http",
        "headers": [
            (b"host", b"abc.preview.localhost"),
            (b"authorization", b"Bearer owner-token"),
            (b"cookie", b"theme=dark; velocity_preview=secret; __Host-velocity_preview=s; cart=3"),
        ],
    }
    forwarded = dict(Gate.strip_credentials(scope)["headers"])
    assert b"authorization" not in forwarded
    assert forwarded[b"cookie"] == b"theme=dark; cart=3"


def test_the_apps_own_authorization_header_passes_when_it_did_not_open_the_preview() -> None:
    """A bearer token the app uses for its own backend is not ours to remove."""
    scope = {"type": "http", "headers": [(b"authorization", b"Bearer app-token"), (b"cookie", b"a=1")]}
    assert (
        dict(Gate.strip_credentials(scope, bearer=False)["headers"])[b"authorization"] == b"Bearer app-token"
    )


def test_a_cookie_header_with_only_our_cookie_is_dropped() -> None:
    """Nothing of ours is left behind, not even an empty Cookie header."""
    scope = {"type": "http", "headers": [(b"cookie", b"velocity_preview=secret")]}
    assert Gate.strip_credentials(scope)["headers"] == []
