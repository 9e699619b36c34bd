"""Where one request goes: the value a resolver returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class Upstream:
    """One upstream server.

    ``base_url`` is the scheme and authority requests go to (a path prefix is kept in front of the
    request's path). With ``uds`` set, the connection dials that unix socket instead and the host in
    ``base_url`` only names the server. ``headers`` are added to every forwarded request (and override
    the client's headers of the same name). ``host_header`` replaces the client's ``Host``; when it is
    ``None`` the client's ``Host`` is forwarded unchanged.
    """

    base_url: str
    uds: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    host_header: str | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"an upstream base_url needs http(s)://host, not {self.base_url!r}")

    @property
    def secure(self) -> bool:
        return urlsplit(self.base_url).scheme == "https"

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.base_url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def netloc(self) -> str:
        return urlsplit(self.base_url).netloc

    @property
    def path_prefix(self) -> str:
        return urlsplit(self.base_url).path.rstrip("/")

    def describe(self) -> str:
        """A name for error messages; never the socket path, which is the host's business."""
        return f"{urlsplit(self.base_url).scheme}://{self.netloc}"
