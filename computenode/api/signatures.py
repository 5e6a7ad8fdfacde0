"""Signed requests as Bacalhau v0.3 clients send them: RSA PKCS#1 v1.5 over SHA-256.

A client signs the exact bytes of its payload, so verification needs the payload's raw
JSON span from the request body, never a re-serialisation (key order, spacing and
escapes would differ). The ClientID is the SHA-256 hex of the key's modulus bytes
(`pkg/system/config.go` `convertToClientID`), so no client can act for another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

_DECODER = json.JSONDecoder()
_WS = " \t\n\r"  # JSON's whitespace, nothing more (str.isspace is wider)


class SignatureError(ValueError):
    """A signed request that must be refused; `reason` says why in words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MalformedBody(SignatureError):
    """The body is not one JSON object at all: a bad request (400), not a refused signature."""


@dataclass(frozen=True, slots=True)
class SignedPayload:
    """A payload whose signature checked out, with the client it belongs to."""

    client_id: str
    raw: bytes  # the signed bytes, exactly as in the body
    payload: dict[str, object]


# -- raw spans ------------------------------------------------------------------------------------
def _skip_ws(s: str, i: int) -> int:
    while i < len(s) and s[i] in _WS:
        i += 1
    return i


def top_level_spans(body: bytes) -> dict[str, bytes]:
    """Each top-level key of a JSON object body with the raw bytes of its value.

    Keys are compared case-insensitively, as Go's decoder matches them; a key given twice
    is refused, since a signer and a decoder could each pick a different copy.
    """
    try:
        s = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedBody("request body is not UTF-8") from None
    spans: dict[str, bytes] = {}
    i = _skip_ws(s, 0)
    if not s.startswith("{", i):
        raise MalformedBody("request body must be a JSON object")
    i = _skip_ws(s, i + 1)
    if s.startswith("}", i):
        return _end(s, i + 1, spans)
    while True:
        if not s.startswith('"', i):
            raise MalformedBody(f"request body is not valid JSON: expected a key at character {i}")
        key, i = _decode_at(s, i)
        i = _skip_ws(s, i)
        if not s.startswith(":", i):
            raise MalformedBody(f"request body is not valid JSON: expected ':' at character {i}")
        start = _skip_ws(s, i + 1)
        _, end = _decode_at(s, start)
        folded = str(key).lower()
        if folded in spans:
            raise MalformedBody(f"request body has the key {key!r} more than once")
        # Characters map back to the same bytes: the body was valid UTF-8 to begin with.
        spans[folded] = s[start:end].encode("utf-8")
        i = _skip_ws(s, end)
        if s.startswith(",", i):
            i = _skip_ws(s, i + 1)
        elif s.startswith("}", i):
            return _end(s, i + 1, spans)
        else:
            raise MalformedBody(f"request body is not valid JSON: expected ',' or '}}' at character {i}")


def _decode_at(s: str, i: int) -> tuple[object, int]:
    try:
        return _DECODER.raw_decode(s, i)
    except json.JSONDecodeError as exc:
        raise MalformedBody(f"request body is not valid JSON: {exc.msg} at character {exc.pos}") from None
    except RecursionError:
        raise MalformedBody("request body is nested too deeply") from None


def _end(s: str, i: int, spans: dict[str, bytes]) -> dict[str, bytes]:
    if _skip_ws(s, i) != len(s):
        raise MalformedBody("request body has data after its JSON object")
    return spans


def raw_span(spans: dict[str, bytes], *names: str) -> tuple[str, bytes]:
    """The first of `names` present in `top_level_spans(body)`, with its raw value bytes."""
    for name in names:
        if name.lower() in spans:
            return name, spans[name.lower()]
    raise SignatureError(f"request body has no {names[0]}")


# -- keys and signatures ----------------------------------------------------------------------------
def load_public_key(encoded: str) -> rsa.RSAPublicKey:
    """A base64 DER RSA public key: PKCS#1 RSAPublicKey (Go's x509.MarshalPKCS1PublicKey,
    what Bacalhau's CLI and the Python SDK send) or SubjectPublicKeyInfo."""
    try:
        der = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("client_public_key is not base64") from None
    for load in (_load_pkcs1, serialization.load_der_public_key):
        try:
            key = load(der)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            continue
        if isinstance(key, rsa.RSAPublicKey):
            return key
        raise SignatureError("client_public_key is not an RSA key")
    raise SignatureError("client_public_key is not a DER RSA public key (PKCS#1 or SubjectPublicKeyInfo)")


def _load_pkcs1(der: bytes) -> object:
    # cryptography reads PKCS#1 only from PEM: wrap the DER in its PEM armour.
    b64 = base64.encodebytes(der).decode()
    pem = f"-----BEGIN RSA PUBLIC KEY-----\n{b64}-----END RSA PUBLIC KEY-----\n"
    return serialization.load_pem_public_key(pem.encode())


def client_id_for(key: rsa.RSAPublicKey) -> str:
    """SHA-256 hex of the modulus, big-endian and key-size long (Bacalhau's ClientID)."""
    n = key.public_numbers().n
    return hashlib.sha256(n.to_bytes((key.key_size + 7) // 8, "big")).hexdigest()


def verify(raw: bytes, signature: str, public_key: str) -> str:
    """Check `signature` over `raw` with `public_key`; the signer's ClientID, else SignatureError."""
    if not signature:
        raise SignatureError("signature is required")
    if not public_key:
        raise SignatureError("client_public_key is required")
    key = load_public_key(public_key)
    try:
        sig = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("signature is not base64") from None
    try:
        key.verify(sig, raw, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise SignatureError("signature does not match the payload and client_public_key") from None
    return client_id_for(key)


def verify_request(body: bytes, payload_keys: tuple[str, ...]) -> SignedPayload:
    """Verify a signed request body `{<payload>, signature, client_public_key}`.

    The payload must be a JSON object whose ClientID is the signer's; its raw bytes are
    what was signed, and the payload returned is decoded from those very bytes.
    """
    spans = top_level_spans(body)
    _, raw = raw_span(spans, *payload_keys)
    signature = _string(spans, "signature")
    public_key = _string(spans, "client_public_key", "clientPublicKey")
    client_id = verify(raw, signature, public_key)
    payload = json.loads(raw)
    if not isinstance(payload, dict):
        raise SignatureError(f"{payload_keys[0]} must be a JSON object")
    claimed = _client_id(payload)
    if not claimed:
        raise SignatureError(f"{payload_keys[0]} must contain a ClientID")
    if claimed != client_id:
        raise SignatureError("ClientID does not match client_public_key")
    return SignedPayload(client_id, raw, payload)


def _string(spans: dict[str, bytes], *names: str) -> str:
    for name in names:
        if name.lower() in spans:
            value = json.loads(spans[name.lower()])
            if not isinstance(value, str):
                raise SignatureError(f"{name} must be a string")
            return value
    return ""


def _client_id(payload: dict[str, object]) -> str:
    """ClientID at the payload's top level, or inside a `data` envelope ({"data": {ClientID, Job}})."""
    for key, value in payload.items():
        if key.lower() == "clientid" and isinstance(value, str):
            return value
    for key, value in payload.items():
        if key.lower() == "data" and isinstance(value, dict):
            return _client_id(value)
    return ""
