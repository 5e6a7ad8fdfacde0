"""`computenode check`: what this node would answer to a job, as a dry run that stores nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from computenode.backends import Availability, build_backends
from computenode.compute import with_identity
from computenode.config import Settings
from computenode.health import Health
from computenode.model import Job, Publisher, ResourceUsageData
from computenode.rules import check_job as check_rules
from computenode.rules import check_shards
from computenode.shards import ShardPlans

if TYPE_CHECKING:
    from computenode.bidding import Bidder, Verdict
    from computenode.capacity.fingerprint import NodeLimits
    from computenode.config import LimitsConfig


@dataclass(frozen=True, slots=True)
class CheckReport:
    accepted: bool
    verdicts: list[Any]
    usage: ResourceUsageData
    shards: int

    def adding(self, verdicts: Sequence[Verdict]) -> CheckReport:
        """This report with more verdicts (the running node's own: draining, its queue)."""
        every = [*self.verdicts, *verdicts]
        return CheckReport(all(v.ok for v in every), every, self.usage, self.shards)

    def to_wire(self) -> dict[str, Any]:
        return {
            "Accepted": self.accepted,
            "Shards": self.shards,
            "Usage": self.usage.to_wire(),
            "Verdicts": [{"Name": v.name, "OK": v.ok, "Reason": v.reason} for v in self.verdicts],
        }


async def check_job(settings: Settings, job: Job) -> CheckReport:
    """`computenode check --config`: what a node with these settings would answer, as a dry run
    that stores nothing (the running node answers POST /api/v1/jobs/check with `judge`)."""
    from computenode.bidding import Bidder
    from computenode.capacity.fingerprint import node_limits

    node_id = settings.node.id or "dry-run"
    backends = build_backends(settings, node_id, "http://127.0.0.1")
    data_dir = settings.node.data_dir if settings.node.data_dir.exists() else Path("/")
    health = Health(backends.checks(), data_dir, settings.retention.min_free_disk)
    async with httpx.AsyncClient() as http:
        try:
            await health.refresh()
            facts = Availability(
                backends, health, Publisher(settings.publishers.default), settings.node.labels
            )
            limits = node_limits(settings.capacity, health.data_dir)
            bidder = Bidder(
                node_id=node_id,
                selection=settings.job_selection,
                timeouts=settings.timeouts,
                limits=limits,
                facts=facts,
                storage=backends.storage,
                plans=ShardPlans(backends.storage),
                http=http,
            )
            return await judge(bidder, job, settings.limits, limits)
        finally:
            await backends.aclose()


async def judge(bidder: Bidder, job: Job, rules: LimitsConfig, limits: NodeLimits) -> CheckReport:
    """Every strategy's verdict on `job`, its shards and its usage; SpecError for a job the node's
    rules (computenode/rules.py) refuse outright, as submit does. Nothing is stored: the Bidder
    only reads."""
    from computenode.bidding import Verdict

    job = with_identity(job)
    check_rules(job, rules)
    verdicts = list(await bidder.evaluate(job))
    usage = await bidder.usage(job)
    shards, shard_reason = await bidder.plans.count(job)
    check_shards(shards, rules)
    verdicts.append(Verdict("sharding", not shard_reason, shard_reason or f"{shards} shard(s)"))
    fits = usage.exceeding(limits.total)
    verdicts.append(Verdict("capacity", not fits, "; ".join(fits) or "fits in the node's capacity"))
    low = bidder.facts.low_disk()
    verdicts.append(Verdict("disk", not low, f"node is low on disk: {low}" if low else "enough free disk"))
    return CheckReport(all(v.ok for v in verdicts), verdicts, usage, shards)
