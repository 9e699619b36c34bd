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


# The emulated organisation's 6PN prefix: one /48 per organisation, as on Fly.
ORG_PREFIX = "fdaa:0:1"


def private_ip() -> str:
    """A machine's 6PN address as Fly writes them (``fdaa:0:1234:a7b:195:e229:8038:2``): the
    organisation's /48, ``a7b``, a host and the machine, eight groups in all."""
    host, machine_high, machine_low = (f"{secrets.randbits(16):x}" for _ in range(3))
    return f"{ORG_PREFIX}:a7b:{host}:{machine_high}:{machine_low}:2"


def nonce() -> str:
    return secrets.token_hex(6)


_ADJECTIVES = ("aged", "bold", "calm", "dark", "eager", "fancy", "gentle", "holy", "icy", "jolly", "lively")
_NOUNS = ("thunder", "river", "forest", "meadow", "sun", "wave", "flower", "cloud", "moon", "field")


def machine_name() -> str:
    adjective = _ADJECTIVES[secrets.randbelow(len(_ADJECTIVES))]
    noun = _NOUNS[secrets.randbelow(len(_NOUNS))]
    return f"{adjective}-{noun}-{secrets.randbelow(9000) + 1000}"
