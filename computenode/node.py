"""The node: builds every part from config, runs the API and background loops, drains and stops.

Only this module imports concrete backends; each is imported inside its
builder so a disabled engine costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from computenode import shards as shard_plan
from computenode.api.base import Capacity
from computenode.callbacks import CallbackSender
from computenode.cleanup import clean
from computenode.compute import BidDecision, Compute
from computenode.config import Settings, load_settings
from computenode.errors import SpecError
from computenode.executors.base import Executor, Recoverable
from computenode.health import Health
from computenode.metrics import Metrics
from computenode.model import (
    Engine,
    ExecutionState,
    Job,
    Publisher,
    Spec,
    StorageSource,
    Verifier,
)
from computenode.publishers.base import Publisher as PublisherBackend
from computenode.runner import Runner
from computenode.scheduler import Scheduler
from computenode.storage.base import StorageProvider
from computenode.store import Execution, JobRecord, Store, Transition
from computenode.systemd import notify_loop, sd_notify
from computenode.verifiers.base import Verifier as VerifierBackend
from computenode.version import __version__

log = logging.getLogger(__name__)

VERSION = __version__
DRAIN_KEY = "draining"
FINAL_CALLBACKS_S = 5.0
ESTUARY_AS_IPFS = True  # Bacalhau v0.3.23 published Estuary jobs to IPFS when no Estuary key was set


@dataclass
class Backends:
    executors: dict[Engine, Executor] = field(default_factory=dict)
    storage: dict[StorageSource, StorageProvider] = field(default_factory=dict)
    publishers: dict[Publisher, PublisherBackend] = field(default_factory=dict)
    verifiers: dict[Verifier, VerifierBackend] = field(default_factory=dict)

    async def close(self) -> None:
        for part in [*self.executors.values(), *self.storage.values(), *self.publishers.values()]:
            close = getattr(part, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()


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


def build_backends(settings: Settings, node_id: str, base_url: str) -> Backends:
    data = settings.node.data_dir
    b = Backends()
    eng = settings.engines
    if eng.docker.enabled:
        from computenode.executors.docker import DockerExecutor

        b.executors[Engine.DOCKER] = DockerExecutor(eng.docker, node_id)
    if eng.wasm.enabled:
        from computenode.executors.wasm import WasmExecutor

        b.executors[Engine.WASM] = WasmExecutor(eng.wasm, data / "cache" / "wasm")
    if eng.noop.enabled:
        from computenode.executors.noop import NoopExecutor

        b.executors[Engine.NOOP] = NoopExecutor(eng.noop)

    from computenode.storage.inline import InlineStorage
    from computenode.storage.ipfs import IPFSStorage
    from computenode.storage.url import URLStorage

    st = settings.storage
    b.storage[StorageSource.IPFS] = IPFSStorage(st.ipfs, data / "cache" / "ipfs")
    b.storage[StorageSource.URL_DOWNLOAD] = URLStorage(st.url)
    b.storage[StorageSource.INLINE] = InlineStorage()
    if st.filecoin_unsealed.path_template:
        from computenode.storage.filecoin_unsealed import FilecoinUnsealedStorage

        b.storage[StorageSource.FILECOIN_UNSEALED] = FilecoinUnsealedStorage(st.filecoin_unsealed)
    if st.local_directory.allowed_roots:
        from computenode.storage.local_directory import LocalDirectoryStorage

        b.storage[StorageSource.LOCAL_DIRECTORY] = LocalDirectoryStorage(st.local_directory)

    from computenode.publishers.ipfs import IPFSPublisher
    from computenode.publishers.local import LocalPublisher
    from computenode.publishers.noop import NoopPublisher

    if settings.publishers.ipfs.enabled:
        ipfs_publisher = IPFSPublisher(st.ipfs)
        b.publishers[Publisher.IPFS] = ipfs_publisher
        if ESTUARY_AS_IPFS:
            b.publishers[Publisher.ESTUARY] = ipfs_publisher
    b.publishers[Publisher.LOCAL] = LocalPublisher(data / "published", settings.publishers.local.base_url or base_url)
    b.publishers[Publisher.NOOP] = NoopPublisher()

    from computenode.verifiers.deterministic import DeterministicVerifier
    from computenode.verifiers.noop import NoopVerifier

    b.verifiers[Verifier.NOOP] = NoopVerifier()
    b.verifiers[Verifier.DETERMINISTIC] = DeterministicVerifier()
    return b


def node_limits_for(settings: Settings, data_dir: Path) -> Any:
    from computenode.capacity.fingerprint import node_limits

    return node_limits(settings.capacity, data_dir)


# Readiness names: one per dependency, as /readyz shows them (docker, wasm, ipfs, ...).
ENGINE_NAMES = {Engine.DOCKER: "docker", Engine.WASM: "wasm", Engine.NOOP: "noop"}


def engine_key(engine: Engine) -> str:
    return ENGINE_NAMES.get(engine, engine.value.lower())


def storage_key(source: StorageSource) -> str:
    return "ipfs" if source is StorageSource.IPFS else f"storage:{source.value}"


def publisher_key(publisher: Publisher) -> str:
    # The IPFS and Estuary publishers use the same kubo as IPFS inputs.
    return "ipfs" if publisher in (Publisher.IPFS, Publisher.ESTUARY) else f"publisher:{publisher.value}"


def dependency_checks(b: Backends) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    for engine, ex in b.executors.items():
        checks[engine_key(engine)] = ex.check
    for src, st in b.storage.items():
        checks[storage_key(src)] = st.check
    for pub, p in b.publishers.items():
        checks.setdefault(publisher_key(pub), p.check)
    return checks


def missing_parts(spec: Spec, b: Backends, health: Health, default_publisher: Publisher) -> list[str]:
    """Why this node cannot run `spec` right now, per missing part (engine, sources, publisher)."""
    reasons: list[str] = []
    if spec.engine not in b.executors:
        reasons.append(f"engine {spec.engine.value} is not enabled on this node")
    elif why := health.reason(engine_key(spec.engine)):
        reasons.append(f"engine {spec.engine.value} is not available: {why}")
    for src in {s.storage_source for s in spec.all_storage_specs() if s.storage_source}:
        if src not in b.storage:
            reasons.append(f"storage source {src.value} is not enabled on this node")
        elif why := health.reason(storage_key(src)):
            reasons.append(f"storage source {src.value} is not available: {why}")
    pub = spec.publisher or default_publisher
    if pub not in b.publishers:
        reasons.append(f"publisher {pub.value} is not enabled on this node")
    elif why := health.reason(publisher_key(pub)):
        reasons.append(f"publisher {pub.value} is not available: {why}")
    if spec.verifier not in b.verifiers:
        reasons.append(f"verifier {spec.verifier.value} is not enabled on this node")
    return reasons


class Node:
    def __init__(
        self, settings: Settings, config_path: Path | None = None, overrides: dict[str, Any] | None = None
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.overrides = overrides or {}  # command-line flags, kept across reloads
        self.data_dir = settings.node.data_dir
        self.node_id = ""
        self.labels = dict(settings.node.labels)
        self.store: Store
        self.backends: Backends
        self.health: Health
        self.compute: Compute
        self.bidder: Any
        self.limits: Any
        self.api_address: tuple[str, int] | None = None
        self.ready = False  # start() finished: the API serves everything
        self.metrics = Metrics()

    def __repr__(self) -> str:
        return f"<Node {self.node_id or '(not started)'} {getattr(self, 'compute', '')!r}>"

    @property
    def base_url(self) -> str:
        api = self.settings.api
        host = "127.0.0.1" if api.host in ("0.0.0.0", "::", "") else api.host
        port = self.api_address[1] if self.api_address else api.port
        return f"http://{host}:{port}"

    # -- the API's view of the node (computenode/api/base.py's NodeView) ------------------------
    @property
    def api_token(self) -> str:
        return self.settings.api.token

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
        return self.compute.runner.results_dir(execution_id) / stream

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
        return await self.store.list(state=state, job_id=job_id, limit=limit)

    async def active_executions(self) -> list[Execution]:
        return await self.store.active()

    async def execution_counts(self) -> dict[ExecutionState, int]:
        return await self.store.counts()

    async def job_record(self, job_id: str) -> JobRecord:
        return await self.store.get_job(job_id)

    async def client_jobs(self, client_id: str, limit: int) -> list[JobRecord]:
        return await self.store.list_jobs(client_id=client_id, limit=limit)

    # -- end of the API's view ------------------------------------------------------------------

    # -- bidding ----------------------------------------------------------------------------
    async def installed(self, spec: Spec) -> list[str]:
        return missing_parts(spec, self.backends, self.health, Publisher(self.settings.publishers.default))

    async def decide(self, job: Job) -> BidDecision:
        verdicts, usage, (shards, shard_reason) = await asyncio.gather(
            self.bidder.evaluate(job), self.bidder.usage(job), shard_plan.count(job, self.backends.storage)
        )
        reasons = [v.reason for v in verdicts if not v.ok]
        if shard_reason:
            reasons.append(shard_reason)
        if why := self.health.reason("disk"):
            reasons.append(f"node is low on disk: {why}")
        return BidDecision(reasons, usage, shards)

    async def shard_inputs(self, job: Job, index: int) -> list[Any]:
        return await shard_plan.inputs(job, index, self.backends.storage)

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        """Open the store, build the parts, reconcile; everything but the API and loops."""
        from computenode.bidding import Bidder
        from computenode.capacity.fingerprint import gpu_indexes

        s = self.settings
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.data_dir / "computenode.db")
        await self.store.open()
        self.node_id = node_id_for(s)
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0))
        self.backends = build_backends(s, self.node_id, self.base_url)
        self.health = Health({"store": self.store.check, **dependency_checks(self.backends)},
                             self.data_dir, s.retention.min_free_disk)  # fmt: skip
        await self.health.refresh()
        self.limits = node_limits_for(s, self.data_dir)
        self.bidder = Bidder(
            self.node_id, s.job_selection, s.timeouts, self.limits, lambda: self.labels, self.installed,
            self.backends.storage, self.http,
        )  # fmt: skip
        runner = Runner(
            self.node_id, self.data_dir / "executions", self.backends.executors, self.backends.storage,
            self.backends.verifiers, self.backends.publishers, self.shard_inputs,
            Publisher(s.publishers.default), s.timeouts.job_default, self.metrics,
        )  # fmt: skip
        gpus = gpu_indexes()
        self.callbacks = CallbackSender(self.store, self.http)
        self.compute = Compute(
            self.node_id, self.store, runner,
            lambda start: Scheduler(self.limits.total, self.limits.queue, gpus, start),
            self.decide, self.callbacks, s.timeouts.bid_expiry, self.metrics,
            keep_failed=s.retention.keep_failed_for > 0,
        )  # fmt: skip
        self.compute.draining = bool(await self.store.get_meta(DRAIN_KEY))
        live = await self._reap_orphans(startup=True)
        await self.compute.reconcile(live)

    async def _reap_orphans(self, startup: bool = False) -> set[str]:
        """Remove engine workloads no live execution owns; the IDs still present before."""
        present: set[str] = set()
        active = {e.id for e in await self.store.active()} if not startup else set()
        if not startup:
            active |= set(self.compute.tasks)
        for ex in self.backends.executors.values():
            if isinstance(ex, Recoverable) and not self.health.reason("docker"):
                with contextlib.suppress(Exception):
                    present |= await ex.live_executions()
                    self.metrics.reaped.inc(await ex.reap(active))
        return present

    def status_line(self) -> str:
        sched = self.compute.scheduler
        return f"running {len(sched.running)}, queued {len(sched.queued)}"

    async def _clean_disk(self) -> None:
        r = self.settings.retention
        freed = await clean(self.store, self.data_dir / "executions", self.data_dir / "published",
                            r.keep_failed_for, r.results_max_age)  # fmt: skip
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
        live = {"node": old.node.model_copy(update={"labels": new.node.labels}),
                "job_selection": new.job_selection, "capacity": new.capacity, "logging": new.logging}  # fmt: skip
        needs_restart = [
            name for name in type(new).model_fields
            if getattr(new, name) != getattr(old, name) and name not in live
        ] + (["node.id", "node.data_dir"] if (new.node.id, new.node.data_dir) != (old.node.id, old.node.data_dir)
             else [])  # fmt: skip
        self.settings = old.model_copy(update=live)
        self.labels = dict(new.node.labels)
        self.limits = node_limits_for(new, self.data_dir)
        self.bidder.update(selection=new.job_selection, limits=self.limits)
        self.compute.scheduler.resize(self.limits.total, self.limits.queue)
        logging.getLogger().setLevel(new.logging.level.upper())
        log.info("configuration reloaded", extra={"needs_restart": needs_restart})
        if needs_restart:
            log.warning("changed keys need a restart to take effect", extra={"keys": needs_restart})
        return needs_restart

    async def close(self) -> None:
        await self.backends.close()
        await self.http.aclose()
        await self.store.close()

    async def set_drain(self, mode: str) -> None:
        """graceful: take no new work; fast: also cancel what runs; off: take work again. Kept across restarts."""
        if mode == "off":
            self.compute.draining = False
            await self.store.set_meta(DRAIN_KEY, "")
            return
        self.compute.draining = True
        await self.store.set_meta(DRAIN_KEY, mode)
        if mode == "fast":
            asyncio.get_running_loop().create_task(self.compute.drain(0.0))

    async def _loops(self, stop: asyncio.Event) -> None:
        async def every(interval_s: float, fn: Callable[[], Any]) -> None:
            while not stop.is_set():
                try:
                    await fn()
                except Exception:
                    log.exception("background task failed", extra={"task": getattr(fn, "__name__", "?")})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)

        docker = self.settings.engines.docker
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.health.run(stop))
            tg.create_task(self.callbacks.run(stop))
            tg.create_task(every(1.0, self.compute.expire_bids))
            tg.create_task(every(docker.reap_interval, self._reap_orphans))
            tg.create_task(every(60.0, self._clean_disk))
            tg.create_task(notify_loop(self.status_line, stop))

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

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, on_signal)
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload()) if self.ready else None)
        api = ApiServer(self)
        # Listen first so the local publisher knows the real port (listen :0 in tests);
        # the API answers 503 "starting" until start() is done.
        self.api_address = await api.start(self.settings.api.host, self.settings.api.port)
        try:
            await self.start()
            self.ready = True
            log.info("node ready", extra={"node_id": self.node_id, "listen": f"{self.base_url}"})
            sd_notify(f"READY=1\nSTATUS=serving on {self.base_url}")
            loops = asyncio.create_task(self._loops(stop))
            await stop.wait()
            sd_notify("STOPPING=1")
            log.info("node stopping", extra={"node_id": self.node_id})
            await self.compute.drain(self.settings.timeouts.drain_grace, hurry=fast)
            await loops
            # Tell requesters what the drain did; what is not delivered now stays in the store.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FINAL_CALLBACKS_S):
                    await self.callbacks.deliver_due()
        finally:
            await api.stop()
            if self.ready:
                await self.close()
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)
        return 0


async def serve(
    settings: Settings, config_path: Path | None = None, overrides: dict[str, Any] | None = None
) -> int:
    """`computenode run`: the node until SIGTERM/SIGINT (SIGHUP reloads `config_path`); the exit code."""
    return await Node(settings, config_path, overrides).run()
