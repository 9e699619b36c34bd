"""This orchestrator's own ES256 signing key, and the JWKS that publishes it.

Locally the orchestrator plays Supabase Auth: it signs user tokens with this key and serves the
public half at ``/auth/v1/.well-known/jwks.json``, so the same verification path as production
(JWKS, asymmetric keys) runs on a laptop.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


class SigningKey:
    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        self.private_key = private_key
        numbers = private_key.public_key().public_numbers()
        self._x = _b64(numbers.x.to_bytes(32, "big"))
        self._y = _b64(numbers.y.to_bytes(32, "big"))
        # RFC 7638 thumbprint: the same key always has the same id.
        canonical = json.dumps(
            {"crv": "P-256", "kty": "EC", "x": self._x, "y": self._y}, separators=(",", ":")
        )
        self.kid = _b64(hashlib.sha256(canonical.encode()).digest())[:22]

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.private_key.public_key()

    def jwk(self) -> dict[str, Any]:
        return {
            "kty": "EC",
            "crv": "P-256",
            "x": self._x,
            "y": self._y,
            "kid": self.kid,
            "alg": "ES256",
            "use": "sig",
            "key_ops": ["verify"],
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.jwk()]}

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKey:
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # another process made it first
                return cls.load_or_create(path)
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
        loaded = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{path} does not hold an EC private key")
        return cls(loaded)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
