"""The publisher seam: make a finished execution's results dir reachable, as a StorageSpec."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from computenode.model import StorageSpec


def published_name(job_id: str, shard_index: int, node_id: str) -> str:
    """Bacalhau's name for published results (pkg/job/util.go)."""
    return f"job-{job_id}-shard-{shard_index}-host-{node_id}"


@runtime_checkable
class Publisher(Protocol):
    async def check(self) -> str | None:
        """None when results can be published now, else the reason."""
        ...

    async def aclose(self) -> None:
        """Release clients and sessions; the node calls it once, at stop."""
        ...

    async def publish(
        self, execution_id: str, job_id: str, shard_index: int, node_id: str, results_dir: Path
    ) -> StorageSpec:
        """Publish the whole results dir; raises PublishFailed. Must be idempotent per execution."""
        ...
