"""One execution's stages: prepare inputs, run on the engine, propose, publish, clean up.

Storage, executors, verifiers and publishers are seen only through their
Protocols, in the registries the node built (backends.py).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from computenode.backends import Backends
from computenode.errors import ExecutionFailed, InputUnavailable, PublishFailed
from computenode.events import ProgressSink, no_progress
from computenode.executors.base import ExecutionRequest
from computenode.executors.results import make_harmless
from computenode.metrics import Metrics
from computenode.model import (
    Engine,
    Job,
    Publisher,
    RunCommandResult,
    StorageSource,
    StorageSpec,
    Verifier,
)
from computenode.progress import ExecutionProgress, reset_current, set_current
from computenode.shards import ShardPlans
from computenode.storage.inline import module_volume
from computenode.store import Execution
from computenode.verifiers.deterministic import sealed_for
from computenode.volume import InputVolume

log = logging.getLogger(__name__)

INLINE_ON_LOOP = 64 << 10  # a data: URL longer than this is decoded in a thread (loop stalls)


@contextmanager
def _disk_full_is_a_failure() -> Iterator[None]:
    """The node's own disk filling up mid-run (stdout, outputs) fails the execution with the reason;
    the work dir is then removed like any failed execution's."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise ExecutionFailed(f"no space left on the node's disk: {exc}", retryable=False) from exc


@dataclass(frozen=True, slots=True)
class RunOutcome:
    result: RunCommandResult
    proposal: bytes


class Runner:
    def __init__(
        self,
        *,
        node_id: str,
        work_root: Path,
        backends: Backends,
        logs_root: Path | None = None,
        plans: ShardPlans,
        default_publisher: Publisher,
        default_timeout_s: float,
        disk_fallback: int = 0,
        metrics: Metrics | None = None,
        progress: ProgressSink = no_progress,
    ) -> None:
        self.node_id = node_id
        self.work_root = work_root
        self.logs_root = logs_root or work_root.parent / "logs"
        self.executors = backends.executors
        self.storage = backends.storage
        self.verifiers = backends.verifiers
        self.publishers = backends.publishers
        self.plans = plans
        self.default_publisher = default_publisher
        self.default_timeout_s = default_timeout_s
        self.disk_fallback = disk_fallback  # the allowance of a job that asked for no disk: job_max
        self.metrics = metrics or Metrics()
        self.progress = progress  # stages as `progress` events (docs/events.md); never stored

    @contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.metrics.stage_seconds.labels(stage).observe(time.monotonic() - start)

    def work_dir(self, execution_id: str) -> Path:
        return self.work_root / execution_id

    def results_dir(self, execution_id: str) -> Path:
        return self.work_dir(execution_id) / "results"

    def publisher_for(self, job: Job) -> Publisher:
        return job.spec.publisher or self.default_publisher

    async def run(self, ex: Execution, job: Job, gpus: tuple[int, ...]) -> RunOutcome:
        """Prepare, run and propose. Raises ExecutionFailed; cancellation propagates."""
        spec = job.spec
        executor = self.executors.get(spec.engine)
        if executor is None:
            raise ExecutionFailed(f"engine {spec.engine.value} is not enabled on this node")
        work = self.work_dir(ex.id)
        results = self.results_dir(ex.id)
        # The executor makes the results dir (and so the work dir) in a hop it makes anyway;
        # inputs make theirs below. The work dir is removed once, by remove().
        volumes: list[InputVolume] = []
        on_disk: list[Path] = []  # input and module dirs made (inline modules make none)
        # The current progress for this task: storage and the image pull report bytes to it.
        progress = ExecutionProgress(self.progress, ex.id)
        token = set_current(progress)
        try:
            progress.stage("fetching inputs")
            with self._timed("input_fetch"):
                specs = [*await self.plans.inputs(job, ex.shard_index), *spec.contexts]
                for i, s in enumerate(specs):
                    on_disk.append(work / "inputs")
                    volumes.append(await self._prepare(s, work / "inputs" / str(i)))
                entry: InputVolume | None = None
                imports: list[InputVolume] = []
                if spec.engine is Engine.WASM:
                    modules = work / "modules"
                    entry = await self._prepare_module(spec.wasm.entry_module, modules / "entry", on_disk)
                    for i, module in enumerate(spec.wasm.import_modules):
                        imports.append(await self._prepare_module(module, modules / str(i), on_disk))
            request = ExecutionRequest(
                execution_id=ex.id,
                job_id=ex.job_id,
                shard_index=ex.shard_index,
                node_id=self.node_id,
                spec=spec,
                inputs=tuple(volumes),
                results_dir=results,
                resources=ex.usage,
                timeout_s=spec.timeout or self.default_timeout_s,
                gpu_indexes=gpus,
                disk_allowance=ex.usage.disk or self.disk_fallback,
                entry_module=entry,
                import_modules=tuple(imports),
            )
            progress.stage("running")
            with self._timed("run"), _disk_full_is_a_failure():
                result = await executor.run(request)
            # A WASM run without inputs wrote only through WASI preview1, which makes plain files,
            # dirs and symlinks only (no device nodes, FIFOs, sockets or mode bits), and had nothing
            # on the host to hard-link: nothing to take away, and one thread hop less per job.
            plain = spec.engine is Engine.WASM and not volumes
            refused = [] if plain else await asyncio.to_thread(make_harmless, results)
            if refused:
                reason = (
                    f"the job wrote {', '.join(refused[:5])}: device nodes, FIFOs and sockets are refused"
                )
                raise ExecutionFailed(reason, result=result, retryable=False)
            proposal = await self.verifiers[spec.verifier].proposal(results)
            requester = job.metadata.requester
            if (
                spec.verifier is Verifier.DETERMINISTIC
                and not ex.owned
                and requester
                and requester.public_key
            ):
                try:
                    proposal = sealed_for(proposal, requester.public_key)
                except ValueError as exc:
                    raise ExecutionFailed(str(exc), result=result, retryable=False) from None
            return RunOutcome(result, proposal)
        finally:
            reset_current(token)
            await asyncio.shield(self._release_inputs(volumes, set(on_disk)))

    async def _prepare(self, spec: StorageSpec, dest: Path) -> InputVolume:
        if spec.storage_source is None:
            raise InputUnavailable(
                f"input at {spec.path or '(no path)'} names no StorageSource", retryable=False
            )
        provider = self.storage.get(spec.storage_source)
        if provider is None:
            raise InputUnavailable(
                f"storage source {spec.storage_source.value} is not enabled on this node", retryable=False
            )
        await asyncio.to_thread(dest.mkdir, parents=True, exist_ok=True)
        return await provider.prepare(spec, dest)

    async def _prepare_module(self, spec: StorageSpec, dest: Path, on_disk: list[Path]) -> InputVolume:
        """A WASM module: an inline one stays in memory (no dirs, no file written and read back)."""
        if spec.storage_source is StorageSource.INLINE and StorageSource.INLINE in self.storage:
            if len(spec.url) > INLINE_ON_LOOP:
                volume = await asyncio.to_thread(module_volume, spec, dest)
            else:
                volume = module_volume(spec, dest)
            if volume is not None:
                return volume
        on_disk.append(dest.parent)
        return await self._prepare(spec, dest)

    async def _release_inputs(self, volumes: list[InputVolume], made: set[Path]) -> None:
        for v in volumes:
            provider = self.storage.get(v.spec.storage_source) if v.spec.storage_source else None
            if provider is not None:
                try:
                    await provider.cleanup(v)
                except Exception:  # cleanup must never hide the run's own outcome
                    log.exception("input cleanup failed", extra={"path": str(v.host_path)})
        # Inputs can be large: freed now, not when the results go with the work dir.
        for folder in sorted(made):
            await asyncio.to_thread(shutil.rmtree, folder, True)

    async def publish(self, ex: Execution, job: Job) -> StorageSpec:
        kind = self.publisher_for(job)
        backend = self.publishers.get(kind)
        if backend is None:
            raise PublishFailed(f"publisher {kind.value} is not enabled on this node", retryable=False)
        results = self.results_dir(ex.id)
        if not results.is_dir():  # one stat of the node's own dir: cheaper than a thread hop
            raise PublishFailed(f"results of execution {ex.id} are gone", retryable=False)
        ExecutionProgress(self.progress, ex.id).stage("publishing", Publisher=kind.value)
        with self._timed("publish"):
            return await backend.publish(ex.id, ex.job_id, ex.shard_index, self.node_id, results)

    async def remove(self, execution_id: str) -> None:
        """Delete the execution's work dir (results included)."""
        await asyncio.to_thread(shutil.rmtree, self.work_dir(execution_id), True)

    def kept_log(self, execution_id: str, stream: str) -> Path:
        return self.logs_root / execution_id / stream

    async def keep_logs_and_remove(self, execution_id: str) -> None:
        """After publishing: keep the whole stdout and stderr (`logs` reads them until
        retention.results_max_age), delete the rest of the work dir."""
        await asyncio.to_thread(self._keep_logs_and_remove, execution_id)

    def _keep_logs_and_remove(self, execution_id: str) -> None:
        """Both steps in one thread hop: each hop costs the loop more CPU than these few syscalls."""
        kept = self.logs_root / execution_id
        kept.mkdir(parents=True, exist_ok=True)
        for stream in ("stdout", "stderr"):
            try:
                os.replace(self.results_dir(execution_id) / stream, kept / stream)
            except FileNotFoundError:
                pass
        shutil.rmtree(self.work_dir(execution_id), True)

    def verify(self, verifier: Verifier, proposals: dict[str, bytes], confidence: int) -> dict[str, bool]:
        return self.verifiers[verifier].verify(proposals, confidence)
