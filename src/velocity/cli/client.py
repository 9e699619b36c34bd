"""The CLI's view of a running orchestrator: its URL, a token, and errors worded for people."""

from __future__ import annotations

import os
from typing import Any

import httpx
import typer

from velocity.auth import SigningKey
from velocity.runtime import issuer_for, resolve_local_defaults
from velocity.settings import Settings

LOCAL_USER = "local-user"


def local_token(
    settings: Settings, *, user: str = LOCAL_USER, ttl_seconds: float = 12 * 3600, operator: bool = False
) -> str:
    """A user token signed with this machine's local key (what ``velocity token`` prints)."""
    resolved = resolve_local_defaults(settings)
    key = SigningKey.load_or_create(resolved.data_dir / "signing-key.pem")
    return issuer_for(resolved, key).mint_user(user, ttl_seconds=ttl_seconds, operator=operator)


class Api:
    def __init__(self, settings: Settings, *, url: str | None, token: str | None) -> None:
        self.base = (url or settings.orchestrator_url).rstrip("/")
        token = token or os.environ.get("VELOCITY_TOKEN") or local_token(settings)
        self.token = token
        self._client = httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {token}"}, timeout=60.0
        )

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The response of a call that succeeded; a failure is printed and ends the command."""
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise typer.BadParameter(
                f"no orchestrator answers at {self.base}; start one with `velocity serve`", param_hint="--url"
            ) from None
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:300]
            typer.secho(f"error {response.status_code}: {message}", fg="red", err=True)
            raise typer.Exit(1)
        return response
