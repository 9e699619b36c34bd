"""Identifiers shaped like Fly's: 14-hex machine ids, ULID versions and event ids, 6PN addresses."""

from __future__ import annotations

import secrets
from datetime import datetime

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid(at: datetime) -> str:
    """A 26-character ULID: 48 bits of milliseconds, then 80 random bits."""
    value = (int(at.timestamp() * 1000) << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def machine_id() -> str:
    return secrets.token_hex(7)


def private_ip() -> str:
    groups = ":".join(f"{secrets.randbits(16):x}" for _ in range(3))
    return f"fdaa:0:{groups}:a7b:{secrets.randbits(8):x}:{secrets.randbits(16):x}:2"


def nonce() -> str:
    return secrets.token_hex(6)


_ADJECTIVES = ("aged", "bold", "calm", "dark", "eager", "fancy", "gentle", "holy", "icy", "jolly", "lively")
_NOUNS = ("thunder", "river", "forest", "meadow", "sun", "wave", "flower", "cloud", "moon", "field")


def machine_name() -> str:
    adjective = _ADJECTIVES[secrets.randbelow(len(_ADJECTIVES))]
    noun = _NOUNS[secrets.randbelow(len(_NOUNS))]
    return f"{adjective}-{noun}-{secrets.randbelow(9000) + 1000}"
