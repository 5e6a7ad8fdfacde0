"""A job's shards: how many, and which inputs each one gets (Bacalhau v0.3.23 sharding).

Exploding inputs can mean walking an IPFS directory, so each node keeps the plans of
recent jobs in memory, keyed by job ID and a hash of the inputs and sharding config:
the same ID with other inputs is another plan, never a stale one.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping

from computenode.errors import InputUnavailable, SpecError
from computenode.model import Job, StorageSource, StorageSpec
from computenode.storage import sharding
from computenode.storage.base import StorageProvider

Plan = list[list[StorageSpec]]
MAX_PLANS = 1024  # jobs being bid on or run at once, with room; bounds the memory held


def plan_key(job: Job) -> tuple[str, str]:
    """(job ID, hash of what the plan depends on: the inputs and the sharding config)."""
    spec = job.spec
    parts = [s.model_dump_json(by_alias=True) for s in spec.inputs]
    parts.append(spec.sharding.model_dump_json(by_alias=True))
    return job.id, hashlib.sha256("\n".join(parts).encode()).hexdigest()


class ShardPlans:
    def __init__(self, storage: Mapping[StorageSource, StorageProvider], max_plans: int = MAX_PLANS) -> None:
        self.storage = storage
        self.max_plans = max_plans
        self._plans: OrderedDict[tuple[str, str], Plan] = OrderedDict()

    def __repr__(self) -> str:
        return f"<ShardPlans cached={len(self._plans)}>"

    async def plan(self, job: Job) -> Plan:
        """The inputs of each shard; raises SpecError when the glob matches nothing."""
        key = plan_key(job)
        cached = self._plans.get(key)
        if cached is not None:
            self._plans.move_to_end(key)
            return cached
        shards = await sharding.shard_inputs(job.spec, self._explode)
        self._plans[key] = shards
        while len(self._plans) > self.max_plans:
            self._plans.popitem(last=False)
        return shards

    async def count(self, job: Job) -> tuple[int, str]:
        """(number of shards, "") or (0, the reason the job cannot be sharded)."""
        try:
            return len(await self.plan(job)), ""
        except SpecError as exc:
            return 0, str(exc)
        except InputUnavailable as exc:
            return 0, f"inputs could not be listed for sharding: {exc.reason}"

    async def inputs(self, job: Job, index: int) -> list[StorageSpec]:
        shards = await self.plan(job)
        if not 0 <= index < len(shards):
            reason = f"shard index {index} is out of range: the job has {len(shards)} shards"
            raise InputUnavailable(reason, retryable=False)
        return shards[index]

    async def _explode(self, spec: StorageSpec) -> list[StorageSpec]:
        provider = self.storage.get(spec.storage_source) if spec.storage_source else None
        if provider is None:
            raise InputUnavailable(f"storage source {spec.storage_source} is not enabled on this node")
        return await provider.explode(spec)
