"""The Deterministic proposal sent to a Bacalhau requester is encrypted for its key, as v0.3.23's
verifier.Encrypter does (RSA-OAEP, SHA-512): its requester counts a proposal it cannot decrypt as
empty and rejects the result."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from computenode.verifiers.deterministic import sealed_for


def libp2p_public_key(key_type: int, der: bytes) -> str:
    """base64 of a libp2p crypto.pb PublicKey, as Job.Metadata.Requester.RequesterPublicKey."""
    size, n = bytearray(), len(der)
    while True:
        byte, n = n & 0x7F, n >> 7
        size.append(byte | (0x80 if n else 0))
        if not n:
            break
    return base64.b64encode(bytes([0x08, key_type, 0x12]) + bytes(size) + der).decode()


def test_the_requester_decrypts_the_proposal() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    proposal = b"h1:QJFQGkYsVdFo00aPUC6ag992WtxI48GLj+rVpS4B5j4="
    sealed = sealed_for(proposal, libp2p_public_key(0, der))
    assert sealed != proposal and len(sealed) == 256
    sha512 = hashes.SHA512()
    oaep = padding.OAEP(mgf=padding.MGF1(sha512), algorithm=sha512, label=None)
    assert private.decrypt(sealed, oaep) == proposal


def test_a_key_that_is_not_rsa_is_named() -> None:
    der = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError, match="not a libp2p RSA public key: key type 1"):
        sealed_for(b"h1:x", libp2p_public_key(1, der))
    with pytest.raises(ValueError, match="not a libp2p RSA public key"):
        sealed_for(b"h1:x", "not base64!")
    with pytest.raises(ValueError, match="not a libp2p RSA public key"):
        sealed_for(b"h1:x", base64.b64encode(b"\x08\x00\x12\x05ab").decode())
