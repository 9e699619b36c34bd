"""Signed webhooks, as Stripe and GitHub sign theirs: an HMAC-SHA256 over the timestamp and the body.

The header is ``Velocity-Signature: t=<unix seconds>,v1=<hex digest>``, the digest of
``f"{t}.{body}"`` under the shared secret (``WEBHOOK_SECRET``). A receiver recomputes it, compares
in constant time, and refuses a timestamp older than its tolerance (a replayed delivery).
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "Velocity-Signature"
TOLERANCE_SECONDS = 300


def sign(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: bytes, *, now: int, tolerance: int = TOLERANCE_SECONDS) -> bool:
    """Whether ``header`` signs ``body`` under ``secret``, made within ``tolerance`` seconds of ``now``."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), f"t={timestamp},v1={parts.get('v1', '')}")
