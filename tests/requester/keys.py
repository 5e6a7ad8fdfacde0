"""Client keys and signed bodies built as Bacalhau v0.3 clients build them."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa


@functools.cache
def client_key(n: int = 0) -> rsa.RSAPrivateKey:
    """RSA-2048 as the SDK and CLI generate (cached: key generation is the slow part)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pkcs1_b64(key: rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    return base64.b64encode(der).decode()


def spki_b64(key: rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def client_id(key: rsa.RSAPrivateKey) -> str:
    n = key.public_key().public_numbers().n
    return hashlib.sha256(n.to_bytes(256, "big")).hexdigest()


def sign(key: rsa.RSAPrivateKey, raw: bytes) -> str:
    return base64.b64encode(key.sign(raw, padding.PKCS1v15(), hashes.SHA256())).decode()


def signed_body(
    key: rsa.RSAPrivateKey,
    payload: dict[str, Any],
    name: str = "job_create_payload",
    signer: rsa.RSAPrivateKey | None = None,
) -> bytes:
    """The body as the SDK sends it: payload dumped with ", "/": " and signed as sent."""
    raw = json.dumps(payload, separators=(", ", ": "))
    sig = sign(signer or key, raw.encode())
    return f'{{"client_public_key": {json.dumps(pkcs1_b64(key))}, "{name}": {raw}, "signature": "{sig}"}}'.encode()
