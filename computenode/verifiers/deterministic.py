"""The Deterministic verifier: executions that agree on a hash of their results win.

The proposal is Go's dirhash "h1:" hash (golang.org/x/mod/sumdb/dirhash Hash1, as
Bacalhau v0.3.23 with prefix "results"): sha256 over the lines
"<hex sha256 of file>  results/<relative path>\\n" of every file, sorted by name,
then "h1:" + base64. Unlike Go, a symlink is hashed by its target text instead
of being followed, so a job cannot make the node read outside its results.
A job scheduled by a Bacalhau requester carries the requester's public key: the proposal sent
back to it is then encrypted for that key (`sealed_for`), RSA-OAEP with SHA-512 as v0.3.23's
verifier.Encrypter does, since its requester decrypts every proposal before comparing them and
counts one it cannot decrypt as empty. Proposals of the node's own jobs stay in the clear.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections import Counter
from pathlib import Path

PREFIX = "results"
RSA_KEY_TYPE = 0  # libp2p crypto.pb KeyType


def sealed_for(proposal: bytes, requester_public_key: str) -> bytes:
    """`proposal` encrypted for a requester's libp2p RSA public key (base64 of its protobuf
    encoding, as in Job.Metadata.Requester). ValueError for a key that is not one."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.hazmat.primitives.serialization import load_der_public_key

    try:
        key_type, der = _libp2p_public_key(base64.b64decode(requester_public_key, validate=True))
        if key_type != RSA_KEY_TYPE:
            raise ValueError(f"key type {key_type} is not RSA")
        key = load_der_public_key(der)
    except (ValueError, IndexError) as exc:
        raise ValueError(f"the job's RequesterPublicKey is not a libp2p RSA public key: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the job's RequesterPublicKey is not an RSA key")
    sha512 = hashes.SHA512()
    return key.encrypt(proposal, padding.OAEP(mgf=padding.MGF1(sha512), algorithm=sha512, label=None))


def _libp2p_public_key(data: bytes) -> tuple[int, bytes]:
    """(Type, Data) of a libp2p crypto.pb PublicKey: field 1 a varint, field 2 bytes."""
    fields: dict[int, int | bytes] = {}
    i = 0
    while i < len(data):
        tag, i = _varint(data, i)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            fields[number], i = _varint(data, i)
        elif wire == 2:
            size, i = _varint(data, i)
            if i + size > len(data):
                raise ValueError("truncated")
            fields[number], i = data[i : i + size], i + size
        else:
            raise ValueError(f"unexpected wire type {wire}")
    key_type, der = fields.get(1, 0), fields.get(2, b"")
    if not isinstance(key_type, int) or not isinstance(der, bytes) or not der:
        raise ValueError("no key data")
    return key_type, der


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def dirhash(root: Path, prefix: str = PREFIX) -> str:
    """Go's dirhash.HashDir(root, prefix, dirhash.Hash1); blocking."""
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            full = os.path.join(dirpath, name)
            files.append((f"{prefix}/{os.path.relpath(full, root).replace(os.sep, '/')}", full))
    summary = hashlib.sha256()
    for rel, full in sorted(files):
        if "\n" in rel:
            raise ValueError(f"file name {rel!r} contains a newline")
        summary.update(f"{_file_hash(full)}  {rel}\n".encode())
    return "h1:" + base64.b64encode(summary.digest()).decode()


def _file_hash(full: str) -> str:
    if os.path.islink(full):
        return hashlib.sha256(os.readlink(full).encode()).hexdigest()
    h = hashlib.sha256()
    with open(full, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class DeterministicVerifier:
    async def proposal(self, results_dir: Path) -> bytes:
        return (await asyncio.to_thread(dirhash, results_dir)).encode()

    def verify(self, proposals: dict[str, bytes], confidence: int) -> dict[str, bool]:
        """The largest group of equal proposals wins when it is alone at the top and has
        at least `confidence` members; an empty proposal never wins."""
        groups = Counter(p for p in proposals.values() if p)
        ranked = groups.most_common(2)
        winner = b""
        if ranked and (len(ranked) == 1 or ranked[0][1] > ranked[1][1]) and ranked[0][1] >= confidence:
            winner = ranked[0][0]
        return {eid: bool(winner) and p == winner for eid, p in proposals.items()}
