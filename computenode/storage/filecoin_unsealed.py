"""FilecoinUnsealed inputs: data a local Filecoin node already unsealed, at a path from a template.

The template comes from config (`storage.filecoin_unsealed.path_template`, e.g.
`/data/unsealed/{{.CID}}`, Bacalhau's Go-template spelling). Nothing is copied:
the path is mounted read-only as it is.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from computenode.config import FilecoinUnsealedConfig
from computenode.disk import tree_size
from computenode.errors import InputUnavailable
from computenode.model import StorageSpec
from computenode.volume import InputVolume

_CID = re.compile(r"^[A-Za-z0-9]{10,200}$")  # no "/" or "..": the CID lands in a path
_PLACEHOLDER = re.compile(r"\{\{\s*\.CID\s*\}\}")


class FilecoinUnsealedStorage:
    def __init__(self, cfg: FilecoinUnsealedConfig) -> None:
        self.cfg = cfg

    def path_for(self, cid: str) -> Path:
        if not _CID.match(cid):
            raise InputUnavailable(f"{cid!r} is not a CID", retryable=False)
        return Path(_PLACEHOLDER.sub(cid, self.cfg.path_template))

    async def aclose(self) -> None:
        """Nothing to release."""

    async def check(self) -> str | None:
        if not _PLACEHOLDER.search(self.cfg.path_template):
            return "storage.filecoin_unsealed.path_template is not set (e.g. /data/unsealed/{{.CID}})"
        return None

    async def has_locally(self, spec: StorageSpec) -> bool:
        if await self.check() is not None:
            return False
        try:
            return await asyncio.to_thread(self.path_for(spec.cid).exists)
        except InputUnavailable:
            return False

    async def size(self, spec: StorageSpec) -> int:
        try:
            return await asyncio.to_thread(tree_size, self.path_for(spec.cid))
        except (InputUnavailable, OSError):
            return 0

    async def prepare(self, spec: StorageSpec, workdir: Path) -> InputVolume:
        reason = await self.check()
        if reason is not None:
            raise InputUnavailable(reason, retryable=False)
        path = self.path_for(spec.cid)
        if not await asyncio.to_thread(path.exists):  # the unsealed copy may sit on a slow mount
            raise InputUnavailable(f"FilecoinUnsealed CID {spec.cid}: {path} does not exist on this node")
        return InputVolume(spec=spec, host_path=path, target=spec.path)

    async def cleanup(self, volume: InputVolume) -> None:
        return None  # the unsealed copy belongs to the Filecoin node

    async def explode(self, spec: StorageSpec) -> list[StorageSpec]:
        return [spec]
