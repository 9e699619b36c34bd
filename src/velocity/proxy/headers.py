"""Which headers cross the proxy, and the ``X-Forwarded-*`` headers it adds.

Hop-by-hop headers (RFC 9110 section 7.6.1) describe one connection and must not be forwarded, nor may
the headers a ``Connection`` header names. The forwarded headers are rebuilt here rather than copied, so
that a client cannot claim another address by sending its own, unless the proxy is told to trust the
one in front of it.
"""

from __future__ import annotations

from collections.abc import Iterable

from velocity.proxy.asgi import Scope
from velocity.proxy.upstream import Upstream

RawHeaders = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Rebuilt by the proxy, or meaningless once the request is re-sent by another HTTP client: the proxy's
# client does not wait for ``100 Continue``, and it writes its own framing.
_REBUILT = frozenset(
    {b"host", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"expect"}
)

# The WebSocket client library writes its own handshake; forwarding the client's would double them.
WEBSOCKET_HANDSHAKE = frozenset(
    {
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
        b"content-length",
    }
)


def _connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> set[bytes]:
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(token.strip().lower() for token in value.split(b",") if token.strip())
    return tokens


def _first(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _scheme(scope: Scope) -> bytes:
    scheme = str(scope.get("scheme", "http"))
    return b"https" if scheme in ("https", "wss") else b"http"


def request_headers(
    scope: Scope, upstream: Upstream, *, trust_forwarded: bool, drop: frozenset[bytes] = frozenset()
) -> RawHeaders:
    """The headers to send upstream for this request, ``host`` first."""
    raw: RawHeaders = list(scope.get("headers", []))
    skip = HOP_BY_HOP | _connection_tokens(raw) | _REBUILT | drop
    client_host = _first(raw, b"host")
    forwarded: RawHeaders = []
    client = scope.get("client")
    client_ip = client[0].encode() if client and client[0] else None
    prior_for = _first(raw, b"x-forwarded-for") if trust_forwarded else None
    if prior_for and client_ip:
        forwarded.append((b"x-forwarded-for", prior_for + b", " + client_ip))
    elif prior_for or client_ip:
        forwarded.append((b"x-forwarded-for", prior_for or client_ip or b""))
    proto = (_first(raw, b"x-forwarded-proto") if trust_forwarded else None) or _scheme(scope)
    forwarded.append((b"x-forwarded-proto", proto))
    forwarded_host = (_first(raw, b"x-forwarded-host") if trust_forwarded else None) or client_host
    if forwarded_host:
        forwarded.append((b"x-forwarded-host", forwarded_host))
    if trust_forwarded and (prior := _first(raw, b"forwarded")):
        forwarded.append((b"forwarded", prior))

    extra = {
        name.lower().encode("latin-1"): value.encode("latin-1") for name, value in upstream.headers.items()
    }
    host = upstream.host_header.encode("latin-1") if upstream.host_header else client_host
    headers: RawHeaders = [(b"host", host or upstream.netloc.encode("latin-1"))]
    headers += [
        (name.lower(), value) for name, value in raw if name.lower() not in skip and name.lower() not in extra
    ]
    headers += forwarded
    headers += list(extra.items())
    return headers


def response_headers(raw: Iterable[tuple[bytes, bytes]]) -> RawHeaders:
    """The upstream's response headers minus the hop-by-hop ones; repeated headers stay repeated."""
    headers = list(raw)
    skip = HOP_BY_HOP | _connection_tokens(headers)
    return [(name.lower(), value) for name, value in headers if name.lower() not in skip]
