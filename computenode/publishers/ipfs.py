"""The IPFS publisher: adds the whole results dir to kubo, pinned, and returns its CID.

Also what an Estuary publisher falls back to without an Estuary key, as in
Bacalhau v0.3.23 (node.py maps Publisher Estuary here). Symlinks a job left in
its outputs are published as symlinks, never followed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from computenode.config import IPFSConfig
from computenode.errors import PublishFailed
from computenode.model import StorageSource, StorageSpec
from computenode.publishers.base import published_name
from computenode.storage.ipfs_client import KuboClient, KuboError

PUBLISH_TIMEOUT_S = 600.0


class IPFSPublisher:
    def __init__(self, cfg: IPFSConfig, *, timeout_s: float = PUBLISH_TIMEOUT_S) -> None:
        self.cfg = cfg
        self.timeout_s = timeout_s
        self.kubo = KuboClient(cfg.api)

    async def aclose(self) -> None:
        await self.kubo.aclose()

    async def check(self) -> str | None:
        return await self.kubo.check()

    async def publish(
        self, execution_id: str, job_id: str, shard_index: int, node_id: str, results_dir: Path
    ) -> StorageSpec:
        """Idempotent: the same results dir always gives the same CID."""
        if not results_dir.is_dir():
            raise PublishFailed(f"results dir {results_dir} is missing", retryable=False)
        try:
            async with asyncio.timeout(self.timeout_s):
                cid = await self.kubo.add_dir(results_dir, pin=True)
        except TimeoutError:
            raise PublishFailed(f"publishing to IPFS took longer than {self.timeout_s:g} s") from None
        except KuboError as exc:
            raise PublishFailed(f"publishing to IPFS failed: {exc.message}") from exc
        except OSError as exc:
            raise PublishFailed(f"reading the results dir failed: {exc}", retryable=False) from exc
        return StorageSpec(
            storage_source=StorageSource.IPFS, name=published_name(job_id, shard_index, node_id), cid=cid
        )
