"""The Deterministic verifier: executions that agree on a hash of their results win.

The proposal is Go's dirhash "h1:" hash (golang.org/x/mod/sumdb/dirhash Hash1, as
Bacalhau v0.3.23 with prefix "results"): sha256 over the lines
"<hex sha256 of file>  results/<relative path>\\n" of every file, sorted by name,
then "h1:" + base64. Unlike Go, a symlink is hashed by its target text instead
of being followed, so a job cannot make the node read outside its results.
The proposal is sent in the clear (Bacalhau encrypted it with the requester's key).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from collections import Counter
from pathlib import Path

PREFIX = "results"


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
