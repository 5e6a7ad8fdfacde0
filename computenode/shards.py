"""A job's shards: how many, and which inputs each one gets (Bacalhau v0.3.23 sharding).

Exploding inputs can mean walking an IPFS directory, so the plan of a job is
computed once and kept in memory by job ID.
"""

from __future__ import annotations

from collections.abc import Mapping

from computenode.errors import InputUnavailable, SpecError
from computenode.model import Job, StorageSource, StorageSpec
from computenode.storage import sharding
from computenode.storage.base import StorageProvider

_plans: dict[str, list[list[StorageSpec]]] = {}
_MAX_PLANS = 1024


async def plan(job: Job, storage: Mapping[StorageSource, StorageProvider]) -> list[list[StorageSpec]]:
    """The inputs of each shard; raises SpecError when the glob matches nothing."""
    cached = _plans.get(job.id) if job.id else None
    if cached is not None:
        return cached
    shards = await sharding.shard_inputs(job.spec, _exploder(storage))
    if job.id:
        if len(_plans) >= _MAX_PLANS:
            _plans.pop(next(iter(_plans)))
        _plans[job.id] = shards
    return shards


def _exploder(storage: Mapping[StorageSource, StorageProvider]) -> sharding.Explode:
    async def explode(spec: StorageSpec) -> list[StorageSpec]:
        provider = storage.get(spec.storage_source) if spec.storage_source else None
        if provider is None:
            raise InputUnavailable(f"storage source {spec.storage_source} is not enabled on this node")
        return await provider.explode(spec)

    return explode


async def count(job: Job, storage: Mapping[StorageSource, StorageProvider]) -> tuple[int, str]:
    """(number of shards, "") or (0, the reason the job cannot be sharded)."""
    try:
        return len(await plan(job, storage)), ""
    except SpecError as exc:
        return 0, str(exc)
    except InputUnavailable as exc:
        return 0, f"inputs could not be listed for sharding: {exc.reason}"


async def inputs(job: Job, index: int, storage: Mapping[StorageSource, StorageProvider]) -> list[StorageSpec]:
    shards = await plan(job, storage)
    if not 0 <= index < len(shards):
        raise InputUnavailable(f"shard index {index} is out of range: the job has {len(shards)} shards",
                               retryable=False)  # fmt: skip
    return shards[index]
