"""The storage seam: make a StorageSpec's data local before a shard runs."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from computenode.model import StorageSpec
from computenode.volume import InputVolume


@runtime_checkable
class StorageProvider(Protocol):
    async def check(self) -> str | None:
        """None when the source can be used now, else the reason (e.g. "kubo unreachable: ...")."""
        ...

    async def aclose(self) -> None:
        """Release clients and sessions; the node calls it once, at stop."""
        ...

    async def has_locally(self, spec: StorageSpec) -> bool:
        """True when the data is on this node already (locality policy); never fetches."""
        ...

    async def size(self, spec: StorageSpec) -> int:
        """Bytes the data takes on disk once prepared (disk capacity); 0 when unknown."""
        ...

    async def prepare(self, spec: StorageSpec, workdir: Path) -> InputVolume:
        """Make the data local under `workdir` (or a shared cache) and say where it is mounted.

        Raises InputUnavailable with a reason the user can act on. Cancellation
        leaves no partial file behind in a shared cache.
        """
        ...

    async def cleanup(self, volume: InputVolume) -> None:
        """Release what prepare made for one execution; idempotent; never touches shared cache entries in use."""
        ...

    async def explode(self, spec: StorageSpec) -> list[StorageSpec]:
        """The spec itself and, for a directory, every entry below it, depth-first in name order (sharding)."""
        ...
