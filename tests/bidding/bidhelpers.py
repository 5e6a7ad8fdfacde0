"""Helpers for the bidding tests: a small real StorageProvider, job and limits builders."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from computenode.capacity import NodeLimits
from computenode.executors.base import InputVolume
from computenode.model import Job, ResourceUsageData, StorageSource, StorageSpec
from computenode.storage.base import StorageProvider

GI = 2**30


class DirStorage:
    """A LocalDirectory-like provider over a real directory: an input is local when `root/<key>` exists.

    The key is the spec's CID, else its SourcePath, else its URL's last segment.
    """

    def __init__(self, root: Path, *, lookup_delay_s: float = 0.0, broken: bool = False) -> None:
        self.root = root
        self.lookup_delay_s = lookup_delay_s
        self.broken = broken

    def _path(self, spec: StorageSpec) -> Path:
        key = spec.cid or spec.source_path.lstrip("/") or spec.url.rsplit("/", 1)[-1]
        return self.root / key

    async def check(self) -> str | None:
        return "directory store is broken" if self.broken else None

    async def has_locally(self, spec: StorageSpec) -> bool:
        if self.lookup_delay_s:
            await asyncio.sleep(self.lookup_delay_s)
        if self.broken:
            raise OSError("directory store is broken")
        return self._path(spec).exists()

    async def size(self, spec: StorageSpec) -> int:
        if self.broken:
            raise OSError("directory store is broken")
        path = self._path(spec)
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0

    async def prepare(self, spec: StorageSpec, workdir: Path) -> InputVolume:
        return InputVolume(spec=spec, host_path=self._path(spec), target=spec.path)

    async def cleanup(self, volume: InputVolume) -> None:
        return None

    async def explode(self, spec: StorageSpec) -> list[StorageSpec]:
        return [spec]


def make_job(**spec: Any) -> Job:
    """A Docker job with the given Spec fields (seed spelling)."""
    base: dict[str, Any] = {"Engine": "Docker", "Docker": {"Image": "busybox"}}
    return Job.model_validate({"Metadata": {"ID": "job-1"}, "Spec": base | spec})


TOTAL = ResourceUsageData(4, 8 * GI, 100 * GI, 1)
JOB_MAX = ResourceUsageData(2, 4 * GI, 50 * GI, 1)


def limits(total: ResourceUsageData = TOTAL, job_max: ResourceUsageData = JOB_MAX) -> NodeLimits:
    return NodeLimits(
        total=total, job_max=job_max, job_default=ResourceUsageData(0.1, 100 * 2**20), queue=total
    )


@dataclass
class Setup:
    """What a test may vary about the Bidder it builds."""

    labels: dict[str, str] = field(default_factory=lambda: {"zone": "eu", "gpus": "2", "tier": "gold"})
    missing: list[str] = field(default_factory=list)  # what `installed` reports
    storage: dict[StorageSource, StorageProvider] = field(default_factory=dict)
    disk: str | None = None  # what `low_disk` reports


@dataclass
class Facts:
    """The NodeFacts a test Bidder is given: its Setup answers for the node, as the test changes it."""

    setup: Setup = field(default_factory=Setup)

    def labels(self) -> dict[str, str]:
        return self.setup.labels

    async def unavailable(self, spec: object) -> list[str]:
        return list(self.setup.missing)

    def low_disk(self) -> str | None:
        return self.setup.disk
