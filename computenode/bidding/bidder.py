"""The Bidder: decides an offer. Every job-selection strategy, the job's resource usage and its shards.

Strategies that do I/O (installed check, locality, input sizes, probes) run concurrently and are
each bounded by probe_timeout. Capacity admission (room now or in the queue) is the scheduler's.
What bidding needs of the node comes in one object, `NodeFacts`, so this package reads and tests
on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Protocol

import httpx

from computenode.bidding import probes, strategies
from computenode.bidding.strategies import Verdict
from computenode.capacity.fingerprint import NodeLimits
from computenode.config import JobSelectionConfig, TimeoutsConfig
from computenode.model import (
    Job,
    Locality,
    ResourceUsageConfig,
    ResourceUsageData,
    Spec,
    StorageSource,
    StorageSpec,
)
from computenode.shards import ShardPlans
from computenode.storage.base import StorageProvider
from computenode.storage.inline import InlineStorage, inline_size

log = logging.getLogger(__name__)

# The order verdicts are returned in (and `computenode check` prints them in).
STRATEGY_NAMES = (
    *("networking", "stateless", "locality", "node_selectors", "timeout"),
    *("job_max", "supported", "installed", "probe_http", "probe_exec"),
)
_USAGE_CACHE_SIZE = 32  # offers being decided at once; bounds the jobs held (up to 10 MB each)


def describe(spec: StorageSpec) -> str:
    """An input as a user wrote it, for reasons."""
    source = spec.storage_source.value if spec.storage_source else "(no source)"
    what = spec.cid or spec.url or spec.source_path or spec.name
    return f"{source} {what}".strip() + (f" at {spec.path}" if spec.path else "")


class NodeFacts(Protocol):
    """What bidding needs to know of the node, now (the node builds one; tests write their own)."""

    def labels(self) -> Mapping[str, str]:
        """The node's labels (they change on reload)."""
        ...

    async def unavailable(self, spec: Spec) -> list[str]:
        """Why the spec's engine, storage sources, publisher or verifier cannot be used now."""
        ...

    def low_disk(self) -> str | None:
        """Why the node is too low on disk to take work, or None."""
        ...


@dataclass(frozen=True, slots=True)
class BidDecision:
    reasons: list[str]  # empty: the node would run it
    usage: ResourceUsageData  # per copy of a shard
    shards: int


class Bidder:
    """Answers "would this node run this job, and why not" for an offer.

    The HTTP client (for probes) is the caller's when given, else one is made on first use
    and closed by `aclose`.
    """

    def __init__(
        self,
        *,
        node_id: str,
        selection: JobSelectionConfig,
        timeouts: TimeoutsConfig,
        limits: NodeLimits,
        facts: NodeFacts,
        storage: Mapping[StorageSource, StorageProvider],
        plans: ShardPlans,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.node_id = node_id
        self.selection = selection
        self.timeouts = timeouts
        self.limits = limits
        self.facts = facts
        self.storage = storage
        self.plans = plans
        self._http = http
        self._own_http: httpx.AsyncClient | None = None
        # One size lookup per job object, shared by evaluate() and usage() called together.
        self._usage: OrderedDict[int, tuple[Job, asyncio.Future[ResourceUsageData]]] = OrderedDict()

    def __repr__(self) -> str:
        s = self.selection
        return (
            f"<Bidder {self.node_id} locality={s.locality.value} networked={s.accept_networked_jobs}"
            f" stateless_rejected={s.reject_stateless_jobs} probes={bool(s.probe_http)},{bool(s.probe_exec)}>"
        )

    def update(self, selection: JobSelectionConfig | None = None, limits: NodeLimits | None = None) -> None:
        """Take new job_selection or capacity settings (SIGHUP); offers already evaluating keep the old ones."""
        if selection is not None:
            self.selection = selection
        if limits is not None:
            self.limits = limits
            self._usage.clear()  # job_default may have changed

    async def aclose(self) -> None:
        if self._own_http is not None:
            await self._own_http.aclose()
            self._own_http = None

    async def decide(self, job: Job) -> BidDecision:
        """Every reason not to bid (empty: bid), the usage of one copy of a shard, and the shard count."""
        usage_now = self._usage_now(job)
        if usage_now is None:  # sizes and shard plans look inputs up: concurrently
            verdicts, usage, (shards, shard_reason) = await asyncio.gather(
                self.evaluate(job), self.usage(job), self.plans.count(job)
            )
        else:
            # No input needs I/O to size (none, or inline only, like a WASM job's module): no
            # task at all; gather's and the size lookups' tasks were 7 of a WASM job's ~12
            # (docs/performance.md).
            verdicts = await self._evaluate(job, usage_now)
            usage = usage_now
            shards, shard_reason = await self.plans.count(job)
        reasons = [v.reason for v in verdicts if not v.ok]
        if shard_reason:
            reasons.append(shard_reason)
        if why := self.facts.low_disk():
            reasons.append(f"node is low on disk: {why}")
        return BidDecision(reasons, usage, shards)

    async def evaluate(self, job: Job) -> list[Verdict]:
        """Every strategy's Verdict, in STRATEGY_NAMES order; never raises for a bad probe or backend."""
        return await self._evaluate(job, self._usage_now(job))

    async def _evaluate(self, job: Job, usage_now: ResourceUsageData | None) -> list[Verdict]:
        spec, policy = job.spec, self.selection
        now: dict[str, Verdict] = {
            "networking": strategies.networking(spec, policy),
            "stateless": strategies.stateless(spec, policy),
            "node_selectors": strategies.node_selectors(spec, self.facts.labels()),
            "timeout": strategies.timeout(spec, self.timeouts),
            "supported": strategies.supported(spec),
        }
        later = self._io_strategies(job, now, usage_now)
        if len(later) == 1:  # the common case: no task to create (a third of a decision's cost)
            [(name, start)] = later.items()
            now[name] = await _guard(name, start)
        else:
            results = await asyncio.gather(*(_guard(n, c) for n, c in later.items()))
            now.update(zip(later, results, strict=True))
        return [now[name] for name in STRATEGY_NAMES]

    def _io_strategies(
        self, job: Job, now: dict[str, Verdict], usage_now: ResourceUsageData | None
    ) -> dict[str, Callable[[], Awaitable[Verdict]]]:
        """The strategies that await something for this job; those that need not go straight into `now`."""
        spec, policy = job.spec, self.selection
        # Started inside _guard, so a bid cancelled before they start leaves no coroutine unawaited.
        later: dict[str, Callable[[], Awaitable[Verdict]]] = {"installed": partial(self._installed, spec)}
        if policy.locality is Locality.LOCAL and spec.inputs:
            later["locality"] = partial(self._locality, spec)
        else:
            anywhere = policy.locality is Locality.ANYWHERE
            now["locality"] = Verdict(
                "locality", True, "job_selection.locality is anywhere" if anywhere else "no inputs"
            )
        if usage_now is None:
            later["job_max"] = partial(self._job_max, job)
        else:
            now["job_max"] = strategies.job_max(usage_now, self.limits.job_max)
        payload = probes.probe_payload(self.node_id, job) if policy.probe_http or policy.probe_exec else b""
        if policy.probe_http:
            later["probe_http"] = partial(
                probes.http_probe, self._client(), policy.probe_http, payload, policy.probe_timeout
            )
        else:
            now["probe_http"] = Verdict("probe_http", True, "no HTTP probe configured")
        if policy.probe_exec:
            later["probe_exec"] = partial(probes.exec_probe, policy.probe_exec, payload, policy.probe_timeout)
        else:
            now["probe_exec"] = Verdict("probe_exec", True, "no exec probe configured")
        return later

    async def usage(self, job: Job) -> ResourceUsageData:
        """The spec's Resources with job_default for unset fields; disk at least the inputs' total size."""
        key = id(job)
        cached = self._usage.get(key)
        if cached is not None and cached[0] is job and not cached[1].cancelled():
            self._usage.move_to_end(key)
            return await asyncio.shield(cached[1])
        usage_now = self._usage_now(job)
        if usage_now is not None:  # no I/O: no task, no cache (the benchmark's common case)
            return usage_now
        specs = job.spec.all_storage_specs()
        future = asyncio.ensure_future(self._compute_usage(job.spec, specs))
        self._usage[key] = (job, future)  # the entry holds the job, so id(job) is not reused meanwhile
        while len(self._usage) > _USAGE_CACHE_SIZE:
            self._usage.popitem(last=False)
        return await asyncio.shield(future)

    def _usage_now(self, job: Job) -> ResourceUsageData | None:
        """The usage when no input's size needs I/O (no inputs, or inline ones only), else None."""
        total = 0
        for spec in job.spec.all_storage_specs():
            provider = self.storage.get(spec.storage_source) if spec.storage_source else None
            if provider is None:
                continue  # size 0, as _size says
            if not isinstance(provider, InlineStorage):
                return None
            total += inline_size(spec)
        return self._usage_of(job.spec, total)

    def _usage_of(self, spec: Spec, input_bytes: int) -> ResourceUsageData:
        # Bacalhau: parsed.Intersect(defaults).Max(disk); the spec's Disk covers its inputs when larger.
        asked = _requested(spec.resources).intersect(self.limits.job_default)
        return asked.max(ResourceUsageData(disk=input_bytes))

    async def _compute_usage(self, spec: Spec, specs: list[StorageSpec]) -> ResourceUsageData:
        sizes = await asyncio.gather(*(self._size(s) for s in specs))
        return self._usage_of(spec, sum(sizes))

    async def _size(self, spec: StorageSpec) -> int:
        """The input's size, 0 when unknown: its source being down is the installed strategy's to report."""
        provider = self.storage.get(spec.storage_source) if spec.storage_source else None
        if provider is None:
            return 0
        try:
            async with asyncio.timeout(self.selection.probe_timeout):
                return max(0, await provider.size(spec))
        except Exception as exc:  # noqa: BLE001 - any backend failure means "size unknown"
            log.warning("input size unknown", extra={"input": describe(spec), "error": repr(exc)})
            return 0

    async def _job_max(self, job: Job) -> Verdict:
        return strategies.job_max(await self.usage(job), self.limits.job_max)

    async def _locality(self, spec: Spec) -> Verdict:
        """`local`: every input is on this node already (Bacalhau's CLI turned local into anywhere)."""
        found = await asyncio.gather(*(self._is_local(s) for s in spec.inputs))
        missing = [why for why in found if why]
        if missing:
            return Verdict("locality", False, "job_selection.locality is local and " + "; ".join(missing))
        return Verdict("locality", True, "every input is on this node")

    async def _is_local(self, spec: StorageSpec) -> str:
        """Empty when the input is here, else why it is not."""
        provider = self.storage.get(spec.storage_source) if spec.storage_source else None
        if provider is None:
            return f"input {describe(spec)} is not local (no provider for its source on this node)"
        try:
            async with asyncio.timeout(self.selection.probe_timeout):
                here = await provider.has_locally(spec)
        except TimeoutError:
            return f"input {describe(spec)} could not be looked up within {self.selection.probe_timeout:g}s"
        except Exception as exc:  # noqa: BLE001 - a lookup failure is "not known to be local"
            return f"input {describe(spec)} could not be looked up: {type(exc).__name__}: {exc}"
        return "" if here else f"input {describe(spec)} is not on this node"

    async def _installed(self, spec: Spec) -> Verdict:
        try:
            async with asyncio.timeout(self.selection.probe_timeout):
                reasons = await self.facts.unavailable(spec)
        except TimeoutError:
            reasons = [
                f"could not check engine and storage availability within {self.selection.probe_timeout:g}s"
            ]
        return strategies.verdict(
            "installed", list(reasons), "engine, sources, publisher and verifier available"
        )

    def _client(self) -> httpx.AsyncClient:
        if self._http is not None:
            return self._http
        if self._own_http is None:
            self._own_http = httpx.AsyncClient()
        return self._own_http


@lru_cache(maxsize=1024)
def _requested(resources: ResourceUsageConfig) -> ResourceUsageData:
    """Parsed Resources, cached: parsing quantities is a sixth of a decision, and offers repeat them."""
    return resources.to_usage()


async def _guard(name: str, start: Callable[[], Awaitable[Verdict]]) -> Verdict:
    """A strategy that fails unexpectedly rejects with a reason instead of failing the whole bid."""
    try:
        return await start()
    except Exception:
        log.exception("bid strategy failed", extra={"strategy": name})
        return Verdict(name, False, f"{name} check failed with an internal error, see node log")
