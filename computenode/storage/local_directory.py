"""LocalDirectory inputs: a host directory under a root allow-listed in config, mounted read-only.

Bacalhau v0.3.23 joined SourcePath to its root without a traversal check; here
the real path (symlinks resolved) must stay under one of `allowed_roots`.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from computenode.config import LocalDirectoryConfig
from computenode.disk import tree_size
from computenode.errors import InputUnavailable
from computenode.model import StorageSpec
from computenode.volume import InputVolume


class LocalDirectoryStorage:
    def __init__(self, cfg: LocalDirectoryConfig) -> None:
        self.cfg = cfg

    def resolve(self, source_path: str) -> Path:
        """The real path of SourcePath; InputUnavailable unless it is under an allowed root."""
        if not source_path:
            raise InputUnavailable("a LocalDirectory input needs a SourcePath", retryable=False)
        real = Path(os.path.realpath(source_path))
        for root in self.cfg.allowed_roots:
            if real.is_relative_to(os.path.realpath(root)):
                return real
        raise InputUnavailable(
            f"{source_path} is not under an allowed root (storage.local_directory.allowed_roots)",
            retryable=False,
        )

    async def aclose(self) -> None:
        """Nothing to release."""

    async def check(self) -> str | None:
        if not self.cfg.allowed_roots:
            return "no storage.local_directory.allowed_roots configured"
        return None

    async def has_locally(self, spec: StorageSpec) -> bool:
        try:
            return await asyncio.to_thread(lambda: self.resolve(spec.source_path).exists())
        except InputUnavailable:
            return False

    async def size(self, spec: StorageSpec) -> int:
        try:
            return await asyncio.to_thread(lambda: tree_size(self.resolve(spec.source_path)))
        except (InputUnavailable, OSError):
            return 0

    async def prepare(self, spec: StorageSpec, workdir: Path) -> InputVolume:
        # realpath and stat run in a thread: an operator's directory may sit on a slow mount.
        path = await asyncio.to_thread(self.resolve, spec.source_path)
        if not await asyncio.to_thread(path.exists):
            raise InputUnavailable(f"{spec.source_path} does not exist on this node", retryable=False)
        return InputVolume(spec=spec, host_path=path, target=spec.path)

    async def cleanup(self, volume: InputVolume) -> None:
        return None  # the directory is the operator's

    async def explode(self, spec: StorageSpec) -> list[StorageSpec]:
        return [spec]
