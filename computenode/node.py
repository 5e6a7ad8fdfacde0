"""The node: builds every part from config, runs the API and background loops, drains and stops."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import signal
import uuid
from collections.abc import Coroutine
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from computenode.api.base import Capacity
from computenode.backends import Availability, Backends, build_backends, engine_key
from computenode.bidding import Bidder
from computenode.callbacks import CallbackSender
from computenode.capacity.fingerprint import NodeLimits
from computenode.cleanup import Cleaner, clean
from computenode.compute import Compute
from computenode.config import Settings, load_settings
from computenode.datadir import DataDirClaim
from computenode.errors import SpecError
from computenode.events import EventBus
from computenode.executors.base import Recoverable
from computenode.health import Health
from computenode.metrics import Metrics
from computenode.model import ExecutionState, Job, JobState, Publisher, StorageSource
from computenode.reserve import DiskReserve
from computenode.runner import Runner
from computenode.scheduler import Scheduler
from computenode.shards import ShardPlans
from computenode.store import (
    ClientJobQuery,
    Execution,
    JobRecord,
    JobSummary,
    Page,
    Position,
    Store,
    Transition,
)
from computenode.supervisor import Supervisor
from computenode.systemd import notify_loop, sd_notify
from computenode.version import __version__

if TYPE_CHECKING:
    from computenode.check import CheckReport
    from computenode.network.service import Network
    from computenode.network.wire import NodeFacts

log = logging.getLogger(__name__)

VERSION = __version__
DRAIN_KEY = "draining"
FINAL_CALLBACKS_S = 5.0


def node_id_for(settings: Settings) -> str:
    """The configured ID, else one generated once and kept in data_dir."""
    if settings.node.id:
        return settings.node.id
    path = settings.node.data_dir / "node_id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        node_id = "n-" + str(uuid.uuid4())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(node_id + "\n")
        return node_id


def node_limits_for(settings: Settings, data_dir: Path) -> NodeLimits:
    from computenode.capacity.fingerprint import node_limits

    return node_limits(settings.capacity, data_dir)


class Node:
    def __init__(
        self, settings: Settings, config_path: Path | None = None, overrides: dict[str, Any] | None = None
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.overrides = overrides or {}  # command-line flags, kept across reloads
        self.data_dir = settings.node.data_dir
        self.node_id = ""
        self.store: Store
        self.backends: Backends
        self.health: Health
        self.compute: Compute
        self.bidder: Bidder
        self.limits: NodeLimits
        self.availability: Availability
        self.reserve: DiskReserve
        self.callbacks: CallbackSender
        self.http: httpx.AsyncClient
        self.api_address: tuple[str, int] | None = None
        self.ready = False  # start() finished: the API serves everything
        self.metrics = Metrics()
        self.cleaner: Cleaner | None = None  # made by the first cleanup pass
        self.network: Network | None = None  # with network.enabled: the Bacalhau network over libp2p
        self.events = EventBus()  # lives as long as this object: SSE streams end when it closes
        self._stack = contextlib.AsyncExitStack()
        self._loops_stop = asyncio.Event()
        self._loops = Supervisor(self._loops_stop)
        self._tasks: set[asyncio.Task[Any]] = set()  # one-off work (reload, fast drain), awaited at stop

    def __repr__(self) -> str:
        return f"<Node {self.node_id or '(not started)'} {getattr(self, 'compute', '')!r}>"

    @property
    def base_url(self) -> str:
        api = self.settings.api
        host = "127.0.0.1" if api.host in ("0.0.0.0", "::", "") else api.host
        port = self.api_address[1] if self.api_address else api.port
        return f"http://{host}:{port}"

    @property
    def labels(self) -> dict[str, str]:
        if hasattr(self, "availability"):
            return dict(self.availability.labels())
        return dict(self.settings.node.labels)

    # -- the API's view of the node (computenode/api/base.py's NodeView) ------------------------
    @property
    def api_token(self) -> str:
        return self.settings.api.token

    @property
    def read_rate(self) -> float:
        return self.settings.api.read_rate

    @property
    def draining(self) -> bool:
        return self.compute.draining

    @property
    def engines(self) -> list[str]:
        return sorted(e.value for e in self.backends.executors)

    @property
    def storage_sources(self) -> list[str]:
        return sorted(s.value for s in self.backends.storage)

    @property
    def publishers(self) -> list[str]:
        return sorted(p.value for p in self.backends.publishers)

    def capacity(self) -> Capacity:
        sched = self.compute.scheduler
        return Capacity(
            total=self.limits.total,
            available=sched.available,
            reserved=sched.pending_usage,
            running=sched.running_usage,
            job_max=self.limits.job_max,
            running_executions=len(sched.running),
            queued_executions=len(sched.queued),
        )

    def dependency_reasons(self) -> dict[str, str | None]:
        return dict(self.health.reasons)

    def usable_engines(self) -> list[str]:
        reasons = self.health.reasons
        up = [e for e in self.backends.executors if reasons.get(engine_key(e), "unchecked") is None]
        return sorted(e.value for e in up)

    def log_path(self, execution_id: str, stream: str) -> Path:
        """The stream's file: in the results dir while the execution has one, else the copy kept
        after publishing. Blocking (it looks at the disk): call it in a thread."""
        live = self.compute.runner.results_dir(execution_id) / stream
        return live if live.exists() else self.compute.runner.kept_log(execution_id, stream)

    def results_archive(self, execution_id: str) -> Path | None:
        from computenode.publishers.local import LocalPublisher

        local = self.backends.publishers.get(Publisher.LOCAL)
        return local.path_for(execution_id) if isinstance(local, LocalPublisher) else None

    async def execution(self, execution_id: str) -> Execution:
        return await self.store.get(execution_id)

    async def execution_history(self, execution_id: str) -> list[Transition]:
        return await self.store.history(execution_id)

    async def executions(
        self, state: ExecutionState | None = None, job_id: str | None = None, limit: int = 1000
    ) -> list[Execution]:
        return await self.store.executions(state=state, job_id=job_id, limit=limit)

    async def execution_page(
        self,
        state: ExecutionState | None = None,
        job_id: str | None = None,
        limit: int = 100,
        after: Position | None = None,
    ) -> Page[Execution]:
        return await self.store.execution_page(state, job_id, limit, after)

    async def active_executions(self, limit: int = -1) -> list[Execution]:
        return await self.store.active(limit)

    async def execution_counts(self) -> dict[ExecutionState, int]:
        return await self.store.counts()

    async def pending_callbacks(self) -> int:
        return await self.store.count_callbacks()

    async def job_record(self, job_id: str) -> JobRecord:
        return await self.store.get_job(job_id)

    async def job_with_executions(self, job_id: str) -> tuple[JobRecord, list[Execution]]:
        return await self.store.job_with_executions(job_id)

    async def job_page(
        self,
        state: JobState | None = None,
        label: str | None = None,
        since: float | None = None,
        limit: int = 100,
        after: Position | None = None,
    ) -> Page[JobSummary]:
        return await self.store.job_page(state, label, since, limit, after)

    async def client_jobs(self, client_id: str, query: ClientJobQuery) -> list[JobSummary]:
        return await self.store.client_jobs(client_id, query)

    async def client_job(self, client_id: str, job_id: str, prefix_len: int) -> JobRecord | None:
        return await self.store.find_client_job(client_id, job_id, prefix_len)

    async def job_ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        return await self.store.job_ids_with_prefix(prefix, limit)

    @property
    def ipfs_api(self) -> str:
        uses_ipfs = StorageSource.IPFS in self.backends.storage or Publisher.IPFS in self.backends.publishers
        return self.settings.storage.ipfs.api if uses_ipfs else ""

    async def check_job(self, job: Job) -> CheckReport:
        from computenode.bidding import Verdict
        from computenode.check import judge

        report = await judge(self.bidder, job, self.settings.limits, self.limits)
        # What submit adds to the bidder's reasons: draining, and room for every copy of every shard.
        sched = self.compute.scheduler
        copies = max(1, job.spec.deal.concurrency)
        room = sched.admit_reasons(report.usage) or sched.room_reasons(
            report.usage.multi(copies * report.shards)
        )
        return report.adding(
            [
                Verdict(
                    "draining", not self.draining, "node is draining" if self.draining else "taking jobs"
                ),
                Verdict("queue", not room, "; ".join(room) or "room in the node's queue"),
            ]
        )

    # -- end of the API's view ------------------------------------------------------------------

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the store, build the parts, reconcile; everything but the API and loops.

        Whatever start() opened is closed by aclose(), and closed here when start() fails half-way.
        """
        try:
            await self._open(self._stack)
        except BaseException:
            await self._stack.aclose()
            raise

    async def _open(self, stack: contextlib.AsyncExitStack) -> None:
        from computenode.capacity.fingerprint import gpu_indexes

        s = self.settings
        claim = DataDirClaim(self.data_dir)
        await asyncio.to_thread(claim.acquire)  # before the store: a second node here touches nothing
        stack.callback(claim.release)
        self.reserve = DiskReserve(self.data_dir)
        await asyncio.to_thread(self.reserve.release_if_low)
        self.store = Store(self.data_dir / "computenode.db", on_full=self.reserve.release)
        await self.store.open()
        stack.push_async_callback(self.store.close)
        self.node_id = await asyncio.to_thread(node_id_for, s)
        self.http = await stack.enter_async_context(
            httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0))
        )
        # Building engines imports and compiles (wasmtime, aiodocker): in a thread, once.
        self.backends = await asyncio.to_thread(build_backends, s, self.node_id, self.base_url)
        stack.push_async_callback(self.backends.aclose)
        checks = {"store": self.store.check, "loops": self._loops.check, **self.backends.checks()}
        self.health = Health(checks, self.data_dir, s.retention.min_free_disk)
        await self.health.refresh()
        self.limits = await asyncio.to_thread(node_limits_for, s, self.data_dir)
        default_publisher = Publisher(s.publishers.default)
        self.availability = Availability(self.backends, self.health, default_publisher, s.node.labels)
        plans = ShardPlans(self.backends.storage)
        self.bidder = Bidder(
            node_id=self.node_id,
            selection=s.job_selection,
            timeouts=s.timeouts,
            limits=self.limits,
            facts=self.availability,
            storage=self.backends.storage,
            plans=plans,
            http=self.http,
        )
        stack.push_async_callback(self.bidder.aclose)
        runner = Runner(
            node_id=self.node_id,
            work_root=self.data_dir / "executions",
            backends=self.backends,
            plans=plans,
            default_publisher=default_publisher,
            default_timeout_s=s.timeouts.job_default,
            disk_fallback=self.limits.job_max.disk,
            metrics=self.metrics,
            progress=self.events.progress,
        )
        gpus = await asyncio.to_thread(gpu_indexes)  # may run nvidia-smi
        self.callbacks = CallbackSender(self.store, self.http, metrics=self.metrics)
        self.compute = Compute(
            node_id=self.node_id,
            store=self.store,
            runner=runner,
            scheduler_factory=lambda start: Scheduler(self.limits.total, self.limits.queue, gpus, start),
            bidder=self.bidder,
            callbacks=self.callbacks,
            bid_expiry_s=s.timeouts.bid_expiry,
            limits=s.limits,
            metrics=self.metrics,
            keep_failed=s.retention.keep_failed_for > 0,
            events=self.events,
        )
        stack.push_async_callback(self.compute.aclose)
        self.compute.draining = bool(await self.store.get_meta(DRAIN_KEY))
        live = await self._reap_orphans(startup=True)
        await self.compute.reconcile(live)
        if s.network.enabled:
            await self._join_network(stack)

    async def _join_network(self, stack: contextlib.AsyncExitStack) -> None:
        try:
            # libp2p's import costs ~0.7 s of CPU: in a thread, so the API keeps answering meanwhile.
            service = await asyncio.to_thread(importlib.import_module, "computenode.network.service")
        except ImportError as exc:
            why = f"needs the network extra (pip install 'computenode[network]'): {exc}"
            raise SpecError([("network.enabled", why)]) from None
        self.network = service.Network(
            config=self.settings.network,
            data_dir=self.data_dir,
            compute=self.compute,
            facts=self.node_facts,
            metrics=self.metrics,
        )
        stack.push_async_callback(self.network.aclose)
        await self.network.start()
        self.health.checks["network"] = self.network.check

    def node_facts(self) -> NodeFacts:
        """What the node tells a Bacalhau network about itself (its gossiped NodeInfo)."""
        from computenode.network.wire import NodeFacts

        cap = self.capacity()
        return NodeFacts(
            engines=self.usable_engines(),
            labels=self.labels,
            total=cap.total,
            available=cap.available,
            job_max=cap.job_max,
            running=cap.running_executions,
            queued=cap.queued_executions,
        )

    def network_status(self) -> dict[str, Any] | None:
        return self.network.status() if self.network is not None else None

    async def aclose(self) -> None:
        """Stop the background loops and close everything start() opened, last opened first."""
        self._loops_stop.set()
        await self._loops.aclose()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._stack.aclose()

    def _spawn(self, name: str, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("background task failed", exc_info=exc, extra={"task": task.get_name()})

    async def _reap_orphans(self, startup: bool = False) -> set[str]:
        """Remove engine workloads no live execution owns; the IDs still present before.

        At start-up this runs before reconciliation, so no shard is retried while a container
        of the previous run still runs it.
        """
        present: set[str] = set()
        active: set[str] = set()
        if not startup:
            active = {e.id for e in await self.store.active()} | set(self.compute.tasks)
        for ex in self.backends.executors.values():
            if isinstance(ex, Recoverable) and not self.health.reason("docker"):
                try:
                    present |= await ex.live_executions()
                    # At start-up every workload is the previous run's: none is spared by age.
                    self.metrics.reaped.inc(await ex.reap(active, grace_s=0.0 if startup else None))
                except Exception:  # the engine went away meanwhile: /readyz says so; reap next round
                    log.warning("reaping orphaned workloads failed", exc_info=True)
        return present

    def status_line(self) -> str:
        sched = self.compute.scheduler
        return f"running {len(sched.running)}, queued {len(sched.queued)}"

    async def _clean_disk(self) -> None:
        """A cleanup pass (cleanup.py); the first one of this process also sweeps orphaned files."""
        if self.cleaner is None:
            executions, published = self.data_dir / "executions", self.data_dir / "published"
            logs = self.compute.runner.logs_root
            self.cleaner = Cleaner(self.store, executions, published, self.settings.retention, logs_root=logs)
            freed = await clean(self.cleaner, orphans=True)
        else:
            freed = await clean(self.cleaner)
        self.metrics.bytes_freed.inc(freed)

    async def reload(self) -> list[str]:
        """SIGHUP: apply the keys safe to change live; return the changed keys that need a restart."""
        if self.config_path is None:
            log.warning("reload asked but the node was started without a config file")
            return []
        try:
            new = load_settings(self.config_path, self.overrides)
        except SpecError as exc:
            log.error("reload refused: the config does not validate", extra={"errors": exc.errors})
            return []
        old = self.settings
        live = {
            "node": old.node.model_copy(update={"labels": new.node.labels}),
            "job_selection": new.job_selection,
            "capacity": new.capacity,
            "logging": new.logging,
        }
        needs_restart = [
            n for n in type(new).model_fields if getattr(new, n) != getattr(old, n) and n not in live
        ]
        if (new.node.id, new.node.data_dir) != (old.node.id, old.node.data_dir):
            needs_restart += ["node.id", "node.data_dir"]
        self.settings = old.model_copy(update=live)
        self.availability.node_labels = dict(new.node.labels)
        self.limits = await asyncio.to_thread(node_limits_for, new, self.data_dir)
        self.bidder.update(selection=new.job_selection, limits=self.limits)
        self.compute.scheduler.resize(self.limits.total, self.limits.queue)
        logging.getLogger().setLevel(new.logging.level.upper())
        if self.network is not None:
            self.network.publish_soon()  # labels or capacity may have changed
        log.info("configuration reloaded", extra={"needs_restart": needs_restart})
        if needs_restart:
            log.warning("changed keys need a restart to take effect", extra={"keys": needs_restart})
        return needs_restart

    async def set_drain(self, mode: str) -> None:
        """graceful: take no new work; fast: also cancel what runs; off: take work again. Kept across restarts."""
        if mode == "off":
            self.compute.draining = False
            await self.store.set_meta(DRAIN_KEY, "")
            return
        self.compute.draining = True
        await self.store.set_meta(DRAIN_KEY, mode)
        if mode == "fast":
            self._spawn("drain", self.compute.drain(0.0))

    def _start_loops(self) -> None:
        loops = self._loops
        loops.start("health", self.health.run)
        loops.start("callbacks", self.callbacks.run)
        loops.every("bid_expiry", 1.0, self.compute.expire_bids)
        loops.every("reaper", self.settings.engines.docker.reap_interval, self._reap_orphans)
        loops.every("cleanup", 60.0, self._clean_disk)
        loops.every("disk_reserve", 5.0, partial(asyncio.to_thread, self.reserve.ensure))
        loops.start("watchdog", partial(notify_loop, self.status_line))
        if self.network is not None:
            loops.start("network", self.network.run)

    async def run(self, stop: asyncio.Event | None = None, handle_signals: bool = True) -> int:
        from computenode.api.server import ApiServer

        stop = stop or asyncio.Event()
        fast = asyncio.Event()
        loop = asyncio.get_running_loop()
        if handle_signals:

            def on_signal() -> None:
                if stop.is_set():
                    fast.set()  # a second signal skips the grace
                stop.set()

            def on_hup() -> None:
                if self.ready:
                    self._spawn("reload", self.reload())

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, on_signal)
            loop.add_signal_handler(signal.SIGHUP, on_hup)
        api = ApiServer(self)
        # Listen first so the local publisher knows the real port (listen :0 in tests);
        # the API answers 503 "starting" until start() is done.
        self.api_address = await api.start(self.settings.api.host, self.settings.api.port)
        try:
            await self.start()
            self.ready = True
            log.info("node ready", extra={"node_id": self.node_id, "listen": f"{self.base_url}"})
            sd_notify(f"READY=1\nSTATUS=serving on {self.base_url}")
            if handle_signals:  # the node owns its process (not embedded, not under tests)
                # What start-up made lives as long as the node: frozen, full collections stop
                # rescanning it, which held the loop for long under load (docs/performance.md).
                gc.freeze()
            self._start_loops()
            await stop.wait()
            sd_notify("STOPPING=1")
            log.info("node stopping", extra={"node_id": self.node_id})
            await self.compute.drain(self.settings.timeouts.drain_grace, hurry=fast)
            self._loops_stop.set()
            await self._loops.wait()
            # Tell requesters what the drain did; what is not delivered now stays in the store.
            try:
                async with asyncio.timeout(FINAL_CALLBACKS_S):
                    await self.callbacks.deliver_due()
            except TimeoutError:
                log.warning("callbacks left undelivered at stop; they are sent after the next start")
        finally:
            self.events.close()  # before the API stops: it waits for open streams and long polls
            await api.stop()
            await self.aclose()
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)
        return 0


async def serve(
    settings: Settings, config_path: Path | None = None, overrides: dict[str, Any] | None = None
) -> int:
    """`computenode run`: the node until SIGTERM/SIGINT (SIGHUP reloads `config_path`); the exit code."""
    return await Node(settings, config_path, overrides).run()
