"""The node's registries of concrete backends, built once from config, and what they can do now.

This is the one module that imports concrete engines, sources, publishers and verifiers;
each is imported inside its branch so a disabled engine costs nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from computenode.config import Settings
from computenode.executors.base import Executor
from computenode.health import Check, Health
from computenode.model import Engine, Publisher, Spec, StorageSource, Verifier
from computenode.publishers.base import Publisher as PublisherBackend
from computenode.storage.base import StorageProvider
from computenode.verifiers.base import Verifier as VerifierBackend

log = logging.getLogger(__name__)

ESTUARY_AS_IPFS = True  # Bacalhau v0.3.23 published Estuary jobs to IPFS when no Estuary key was set

# Readiness names: one per dependency, as /readyz shows them (docker, wasm, ipfs, ...).
ENGINE_NAMES = {Engine.DOCKER: "docker", Engine.WASM: "wasm", Engine.NOOP: "noop"}


def engine_key(engine: Engine) -> str:
    return ENGINE_NAMES.get(engine, engine.value.lower())


def storage_key(source: StorageSource) -> str:
    return "ipfs" if source is StorageSource.IPFS else f"storage:{source.value}"


def publisher_key(publisher: Publisher) -> str:
    # The IPFS and Estuary publishers use the same kubo as IPFS inputs.
    return "ipfs" if publisher in (Publisher.IPFS, Publisher.ESTUARY) else f"publisher:{publisher.value}"


@dataclass
class Backends:
    executors: dict[Engine, Executor] = field(default_factory=dict)
    storage: dict[StorageSource, StorageProvider] = field(default_factory=dict)
    publishers: dict[Publisher, PublisherBackend] = field(default_factory=dict)
    verifiers: dict[Verifier, VerifierBackend] = field(default_factory=dict)

    def checks(self) -> dict[str, Check]:
        """One readiness check per dependency name (a kubo shared by sources and publishers is one)."""
        checks: dict[str, Check] = {}
        for engine, ex in self.executors.items():
            checks[engine_key(engine)] = ex.check
        for src, st in self.storage.items():
            checks[storage_key(src)] = st.check
        for pub, p in self.publishers.items():
            checks.setdefault(publisher_key(pub), p.check)
        return checks

    async def aclose(self) -> None:
        """Close every backend once (the IPFS publisher may be registered twice); log what fails."""
        seen: set[int] = set()
        parts: list[Executor | StorageProvider | PublisherBackend] = [
            *self.executors.values(),
            *self.storage.values(),
            *self.publishers.values(),
        ]
        for part in parts:
            if id(part) in seen:
                continue
            seen.add(id(part))
            try:
                await part.aclose()
            except Exception:
                log.exception("backend did not close cleanly", extra={"backend": type(part).__name__})


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
    max_files = settings.limits.max_files
    b.storage[StorageSource.IPFS] = IPFSStorage(st.ipfs, data / "cache" / "ipfs", max_files=max_files)
    b.storage[StorageSource.URL_DOWNLOAD] = URLStorage(st.url)
    b.storage[StorageSource.INLINE] = InlineStorage(max_files=max_files)
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
    local_url = settings.publishers.local.base_url or base_url
    b.publishers[Publisher.LOCAL] = LocalPublisher(data / "published", local_url)
    b.publishers[Publisher.NOOP] = NoopPublisher()

    from computenode.verifiers.deterministic import DeterministicVerifier
    from computenode.verifiers.noop import NoopVerifier

    b.verifiers[Verifier.NOOP] = NoopVerifier()
    b.verifiers[Verifier.DETERMINISTIC] = DeterministicVerifier()
    return b


class Availability:
    """What bidding needs to know of the node now: its labels, the parts a spec lacks, the disk.

    Built by the node from its backends and health; the node changes `labels` on reload.
    """

    def __init__(
        self, backends: Backends, health: Health, default_publisher: Publisher, labels: Mapping[str, str]
    ) -> None:
        self.backends = backends
        self.health = health
        self.default_publisher = default_publisher
        self.node_labels = dict(labels)

    def labels(self) -> Mapping[str, str]:
        return self.node_labels

    def low_disk(self) -> str | None:
        return self.health.reason("disk")

    async def unavailable(self, spec: Spec) -> list[str]:
        """Why this node cannot run `spec` right now, per missing part (engine, sources, publisher)."""
        b, health = self.backends, self.health
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
        pub = spec.publisher or self.default_publisher
        if pub not in b.publishers:
            reasons.append(f"publisher {pub.value} is not enabled on this node")
        elif why := health.reason(publisher_key(pub)):
            reasons.append(f"publisher {pub.value} is not available: {why}")
        if spec.verifier not in b.verifiers:
            reasons.append(f"verifier {spec.verifier.value} is not enabled on this node")
        return reasons
