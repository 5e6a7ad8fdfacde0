"""Moving bytes for the client commands: result download progress, and the node's IPFS API."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from computenode.cli.common import err
from computenode.client import DEFAULT_IPFS_API, NodeClient

SHOW_FROM = 1 << 20  # smaller transfers end before a progress line would help
EVERY_S = 0.2  # redraw at most this often


def _size(n: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


class ByteProgress:
    """One redrawn line per transfer on a terminal (`shard 0: 3.2 MiB of 5.0 MiB, 1.1 MiB/s`);
    nothing when the stream is not a terminal, so pipes and logs stay clean."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.on = self.stream.isatty()
        self.current = ""
        self.started = 0.0
        self.drawn = 0.0
        self.shown = False

    def __call__(self, what: str, done: int, total: int | None) -> None:
        if not self.on:
            return
        now = time.monotonic()
        if what != self.current:
            self.close()
            self.current, self.started, self.drawn = what, now, 0.0
        finished = total is not None and done >= total
        if done < SHOW_FROM or (now - self.drawn < EVERY_S and not finished):
            return
        rate = done / max(now - self.started, 1e-3)
        of = f" of {_size(total)}" if total else ""
        self.stream.write(f"\r{what}: {_size(done)}{of}, {_size(rate)}/s\033[K")
        self.stream.flush()
        self.drawn, self.shown = now, True

    def close(self) -> None:
        """End the current line (the next output starts on its own)."""
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
        self.shown = False


def node_ipfs_api(node: NodeClient, given: str | None) -> str:
    """--ipfs-api, else the kubo API the node advertises (GET /api/v1/node: IPFS.API), else kubo's
    default address."""
    if given:
        return given
    advertised = (node.node().get("IPFS") or {}).get("API")
    if advertised:
        return str(advertised)
    err(f"warning: the node at {node.base_url} advertises no IPFS API; trying {DEFAULT_IPFS_API}")
    return DEFAULT_IPFS_API
