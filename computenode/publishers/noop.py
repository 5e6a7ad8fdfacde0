"""The Noop publisher: publishes nothing and returns an empty StorageSpec (Bacalhau's Noop)."""

from __future__ import annotations

from pathlib import Path

from computenode.model import StorageSpec


class NoopPublisher:
    async def aclose(self) -> None:
        """Nothing to release."""

    async def check(self) -> str | None:
        return None

    async def publish(
        self, execution_id: str, job_id: str, shard_index: int, node_id: str, results_dir: Path
    ) -> StorageSpec:
        return StorageSpec()
