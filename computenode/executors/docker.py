"""The Docker executor: one job shard in one container on the engine, through aiodocker.

Stages of one run: check the outputs and build the config (errors before anything starts),
make the image present, create (never containers.run: it pulls behind the policy's back),
attach, start, wait under the job's timeout, read State, remove. The container config
builders live in docker_config.py, the pull policy in docker_image.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
from aiodocker.containers import DockerContainer
from aiodocker.exceptions import DockerError
from aiodocker.stream import Stream
from yarl import URL

from computenode import progress
from computenode.config import DockerConfig
from computenode.disk import tree_size
from computenode.errors import ExecutionFailed, ImageUnavailable, JobTimeout, OutOfMemory
from computenode.executors.base import ExecutionRequest
from computenode.executors.docker_config import EXECUTION, container_config, container_name, node_filter
from computenode.executors.docker_image import ImagesSeen, ensure_image, seconds_text
from computenode.executors.results import NO_EXIT_CODE, STDERR, STDOUT, CappedWriter, collect, output_dirs
from computenode.model import RunCommandResult

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 5.0
API_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=5)  # short calls; long ones are unbounded
DRAIN_TIMEOUT_S = 10.0  # after exit, the attach stream ends at once; this only bounds a stuck engine
OOM_REASON = "memory limit exceeded"
DISK_WATCH_S = 0.5  # how often outputs are measured against the disk allowance
SIGNAL_EXIT = 128  # exit codes from here up: the process died of a signal (128 + its number)
MIN_API = "1.30"  # Docker 17.07: the first to answer a wait's headers before the exit


class DockerExecutor:
    """Runs Docker-engine jobs; Recoverable: its containers carry this node's labels."""

    def __init__(self, cfg: DockerConfig, node_id: str) -> None:
        self.cfg = cfg
        self.node_id = node_id
        self._docker: aiodocker.Docker | None = None  # made on first use: constructors never touch the loop
        self._running: set[str] = set()  # execution IDs this process is running now
        self._images = ImagesSeen()
        # Containers whose run has ended, being removed after the result went back to the
        # caller: removal is off each job's critical path (~6-8 ms of engine time here).
        self._removing: set[asyncio.Task[bool]] = set()

    def __repr__(self) -> str:
        return f"DockerExecutor(node={self.node_id!r}, host={self.cfg.host!r}, running={len(self._running)})"

    def _client(self) -> aiodocker.Docker:
        if self._docker is None:
            self._docker = aiodocker.Docker(url=self.cfg.host, timeout=API_TIMEOUT)
        return self._docker

    async def aclose(self) -> None:
        if self._removing:
            await asyncio.gather(*self._removing, return_exceptions=True)
        if self._docker is not None:
            await self._docker.close()
            self._docker = None

    async def check(self) -> str | None:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                version = await self._client().version()
        except TimeoutError:
            return f"docker engine at {self.cfg.host} did not answer within {CHECK_TIMEOUT_S:g} s"
        except (DockerError, aiohttp.ClientError, OSError) as exc:
            return f"docker engine at {self.cfg.host} is unreachable: {_message(exc)}"
        api = str(version.get("ApiVersion", ""))
        if _older(api, MIN_API):
            # The wait is registered before the start (_start_and_wait): older engines answer
            # its headers only at the exit, and the job would never start.
            return f"docker engine at {self.cfg.host} speaks API {api}; this node needs {MIN_API} or later"
        return None

    async def run(self, request: ExecutionRequest) -> RunCommandResult:
        outputs = output_dirs(request.results_dir, list(request.spec.outputs))
        config = container_config(request, self.cfg, self.node_id, outputs)
        docker = self._client()
        self._running.add(request.execution_id)
        try:
            container = await self._present_and_create(docker, request, config)
            try:
                result = await self._supervise(container, request)
            except asyncio.CancelledError:
                # A cancelled run's container is gone once the cancel returns, as the node expects.
                await _finish(_remove(container))
                raise
            except BaseException:
                self._remove_later(container)
                raise
            self._remove_later(container)
            return result
        except (DockerError, aiohttp.ClientError) as exc:
            # One mapping at the edge: the engine failed us (or went away mid-run), not the job.
            raise ExecutionFailed(f"docker engine error: {_message(exc)}", retryable=True) from exc
        finally:
            self._running.discard(request.execution_id)

    async def _present_and_create(
        self, docker: aiodocker.Docker, request: ExecutionRequest, config: dict[str, Any]
    ) -> DockerContainer:
        """The image made present, then the container created.

        An image this executor saw present within ImagesSeen.TTL_S is not inspected again (one
        engine call per job); if it was removed since, create answers 404 and the image is
        made present once more under the pull policy before a second create.
        """
        image = config["Image"]
        seen = self.cfg.pull_policy == "if-not-present" and self._images.recent(image)
        if not seen:
            await ensure_image(docker, image, self.cfg.pull_policy, self.cfg.pull_timeout)
            self._images.add(image)
            _clock_after_pull()
        try:
            return await self._create(docker, request, config)
        except ImageUnavailable:
            self._images.discard(image)
            if not seen:
                raise
        await ensure_image(docker, image, self.cfg.pull_policy, self.cfg.pull_timeout)
        self._images.add(image)
        _clock_after_pull()
        return await self._create(docker, request, config)

    def _remove_later(self, container: DockerContainer) -> None:
        """Remove the container in the background; aclose() waits for it, the reaper retries failures."""
        task = asyncio.ensure_future(_remove(container))
        self._removing.add(task)
        task.add_done_callback(self._removing.discard)

    async def _create(
        self, docker: aiodocker.Docker, request: ExecutionRequest, config: dict[str, Any]
    ) -> DockerContainer:
        """Create the container; a cancel mid-call still removes it rather than leave it to the reaper."""
        name = container_name(request.execution_id)
        task = asyncio.ensure_future(docker.containers.create(config, name=name))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(DockerError):
                await _remove(await task)
            raise
        except DockerError as exc:
            if exc.status == 404:
                raise ImageUnavailable(f"image {config['Image']} is not on this node") from exc
            if exc.status == 409:
                raise ExecutionFailed(f"container {name} already exists", retryable=True) from exc
            raise

    async def _supervise(self, container: DockerContainer, request: ExecutionRequest) -> RunCommandResult:
        """Stream the output to the results dir while the job runs, then judge how it ended."""
        results = request.results_dir
        out = CappedWriter(results / STDOUT, self.cfg.stream_cap)
        err = CappedWriter(results / STDERR, self.cfg.stream_cap)
        watch = _DiskWatch(
            container, [results / o.name for o in request.spec.outputs], request.disk_allowance
        )
        try:
            # Attach before start so nothing the job prints is missed; attach (not logs) is byte-exact.
            async with _attach(container) as stream:
                pump = asyncio.create_task(_pump(stream, out, err))
                # Output that cannot be written (the node's disk is full) stops the job: else it
                # blocks on a stream nobody reads, and never exits.
                killing: list[asyncio.Task[None]] = []
                pump.add_done_callback(lambda t: _kill_if_failed(t, container, killing))
                watching = asyncio.create_task(watch.run())
                try:
                    timed_out, exit_code = await self._start_and_wait(container, request)
                finally:
                    watching.cancel()
                    await asyncio.gather(watching, *killing, return_exceptions=True)
                    await _drain(pump)
        finally:
            with contextlib.ExitStack() as closing:  # both closed, even when one fails (a full disk)
                closing.callback(err.close)
                closing.callback(out.close)
        if watch.over:
            partial = await asyncio.to_thread(collect, results, NO_EXIT_CODE, watch.over)
            raise ExecutionFailed(watch.over, result=partial, retryable=False)
        if exit_code is not None and exit_code < SIGNAL_EXIT:
            # A plain exit: no OOM kill of the job's process and no kill from outside,
            # so the engine is not asked for the State (one call less per job).
            return collect(results, exit_code)
        state = (await container.show())["State"]
        if not timed_out and int(state.get("ExitCode", 0)) >= SIGNAL_EXIT:
            await _not_killed_by_others(self._client(), container.id, started_at=float(state_started(state)))
        return _judge(request, state, timed_out)

    async def _start_and_wait(
        self, container: DockerContainer, request: ExecutionRequest
    ) -> tuple[bool, int | None]:
        """Run to exit: (True when the job's own timeout stopped it, the exit code when it ended
        by itself). A cancel kills at once.

        The wait is registered before the start, as `docker run` does: the engine answers the
        wait's headers once it is registered, so an exit right after the start is not missed
        and no second round trip is left after the start.
        """
        docker = self._client()
        try:
            async with docker._query(
                f"containers/{container.id}/wait",
                method="POST",
                params={"condition": "next-exit"},
                timeout=None,  # as long as the job runs; the job's own timeout bounds it below
            ) as waiting:
                await _start(container, request)
                log.info("container started", extra={"execution_id": request.execution_id})
                try:
                    async with asyncio.timeout(request.timeout_s if request.timeout_s > 0 else None):
                        body = await waiting.json()
                    return False, int(body["StatusCode"])
                except TimeoutError:
                    # SIGTERM, then SIGKILL after the grace (a shell as PID 1 ignores SIGTERM).
                    await container.stop(t=math.ceil(self.cfg.stop_grace))
                    await container.wait()
                    return True, None
        except asyncio.CancelledError:
            await _finish(_kill(container))
            raise

    async def live_executions(self) -> set[str]:
        rows = await self._client().containers.list(all=True, filters=node_filter(self.node_id))
        return {row["Labels"].get(EXECUTION, "") for row in rows} - {""}

    async def reap(self, live: set[str], grace_s: float | None = None) -> int:
        """Remove this node's containers that no live execution owns and older than the grace.

        The grace (reap_grace unless given) keeps a container just created by a run whose
        execution the caller has not yet recorded as live; at start-up nothing of the previous
        run is live, so the node passes 0 and every leftover goes, created-only ones included.
        Idempotent.
        """
        keep = live | self._running
        grace = self.cfg.reap_grace if grace_s is None else grace_s
        now = time.time()
        removed = 0
        for row in await self._client().containers.list(all=True, filters=node_filter(self.node_id)):
            execution_id = row["Labels"].get(EXECUTION, "")
            if execution_id in keep or now - float(row["Created"]) < grace:
                continue
            if await _remove(row):
                removed += 1
                log.info("reaped container", extra={"execution_id": execution_id, "container": row.id})
        return removed


class _DiskWatch:
    """Kills the container once its outputs take more than the execution's disk allowance."""

    def __init__(self, container: DockerContainer, dirs: list[Path], allowance: int) -> None:
        self.container, self.dirs, self.allowance = container, dirs, allowance
        self.over = ""  # the reason, once it went over

    async def run(self) -> None:
        if self.allowance <= 0 or not self.dirs:
            return
        while True:
            await asyncio.sleep(DISK_WATCH_S)
            used = await asyncio.to_thread(lambda: sum(tree_size(d) for d in self.dirs))
            if used > self.allowance:
                self.over = (
                    f"outputs took {used} bytes, over the disk allowance of {self.allowance} bytes "
                    "(Resources.Disk, else capacity.job_max.disk): the job was stopped"
                )
                await _kill(self.container)
                return


def _clock_after_pull() -> None:
    """A pull shows as its own stage: the job's running clock starts again after it."""
    if progress.current().stage_name == "pulling image":
        progress.current().stage("running")


def state_started(state: dict[str, Any]) -> float:
    """State.StartedAt as a Unix time (0 when it cannot be read: then every event counts)."""
    text = str(state.get("StartedAt", ""))[:26].rstrip("Z")  # RFC 3339 with nanoseconds
    try:
        return datetime.fromisoformat(text + "+00:00").timestamp()
    except ValueError:
        return 0.0


async def _not_killed_by_others(docker: aiodocker.Docker, container_id: str, started_at: float) -> None:
    """Raise ExecutionFailed when the engine (stopping or restarting) or an operator killed the job.

    Such a death looks like the job's own exit 137/143; the engine's event log tells them apart:
    a kill event for the container that we did not send. aiodocker has no call for a bounded
    events query, so this uses its request helper.
    """
    filters = {"type": ["container"], "container": [container_id], "event": ["kill"]}
    params = {"since": f"{started_at:.3f}", "until": f"{time.time():.3f}", "filters": json.dumps(filters)}
    async with docker._query("events", params=params) as resp:
        lines = (await resp.text()).splitlines()
    for line in lines:
        signal = json.loads(line).get("Actor", {}).get("Attributes", {}).get("signal", "?")
        raise ExecutionFailed(
            f"docker engine error: the container was killed from outside the job (signal {signal}): "
            "the engine stopped or restarted, or someone killed it",
            retryable=True,
        )


async def _start(container: DockerContainer, request: ExecutionRequest) -> None:
    try:
        await container.start()
    except DockerError as exc:
        if request.gpu_indexes and exc.status == 500:
            # No NVIDIA runtime: "could not select device driver" (docs/docker-executor.md).
            raise ExecutionFailed(
                f"GPUs {list(request.gpu_indexes)} are not available: {exc.message}"
            ) from exc
        if exc.status in (400, 404, 500):
            # A missing entrypoint or a bad working dir: the job's own spec cannot start.
            raise ExecutionFailed(f"container could not start: {exc.message}") from exc
        raise


def _attach(container: DockerContainer) -> Stream:
    """stdout and stderr of a container this executor created, as a stream.

    aiodocker's own attach inspects the container first to learn whether it has a TTY;
    ours never has one (container_config), so that engine call is skipped.
    """

    async def setup() -> tuple[URL, bytes | None, bool]:
        query: dict[str, str | int] = {
            "stdout": 1,
            "stderr": 1,
            "stdin": 0,
            "stream": 1,
            "logs": 0,
            "detachKeys": "",
        }
        return URL(f"containers/{container.id}/attach").with_query(query), None, False

    return Stream(container.docker, setup)


async def _pump(stream: Stream, out: CappedWriter, err: CappedWriter) -> None:
    """Demultiplexed frames to the two files; aiodocker's queue pauses the socket at 64 KiB.

    Each frame is written and flushed at once (one write syscall of at most one frame,
    cheaper than a thread hop each), so the files show the output so far while the job runs.
    """
    while (msg := await stream.read_out()) is not None:
        writer = err if msg.stream == 2 else out
        writer.write(msg.data)
        writer.flush()


def _kill_if_failed(
    pump: asyncio.Task[None], container: DockerContainer, killing: list[asyncio.Task[None]]
) -> None:
    if not pump.cancelled() and pump.exception() is not None:
        killing.append(asyncio.ensure_future(_kill(container)))


async def _drain(pump: asyncio.Task[None]) -> None:
    """Let the pump read to EOF (the container has exited or been killed), bounded."""
    done, _ = await asyncio.wait({pump}, timeout=DRAIN_TIMEOUT_S)
    if not done:
        pump.cancel()
        log.warning("output stream did not end after the container stopped")
    with contextlib.suppress(asyncio.CancelledError, DockerError, aiohttp.ClientError):
        await pump


def _judge(request: ExecutionRequest, state: dict[str, Any], timed_out: bool) -> RunCommandResult:
    """OOM from State.OOMKilled (not guessed from 137), then the job's timeout, else a result."""
    exit_code = int(state.get("ExitCode", -1))
    if state.get("OOMKilled"):
        raise OutOfMemory(OOM_REASON, result=collect(request.results_dir, exit_code, OOM_REASON))
    if timed_out:
        reason = f"timed out after {seconds_text(request.timeout_s)} s"
        raise JobTimeout(reason, result=collect(request.results_dir, exit_code, reason))
    return collect(request.results_dir, exit_code)


async def _finish(cleanup: Coroutine[Any, Any, object]) -> None:
    """Run a cleanup step to its end even when the task is cancelled meanwhile, then re-raise.

    asyncio.shield alone would let the cancel return at once while the step still runs,
    and the caller would see a container that is about to disappear (or never does).
    """
    task = asyncio.ensure_future(cleanup)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


async def _kill(container: DockerContainer) -> None:
    with contextlib.suppress(DockerError):
        await container.kill(signal="SIGKILL")


async def _remove(container: DockerContainer) -> bool:
    """Force-remove; False when it was already gone or the engine refused (the reaper retries)."""
    try:
        await container.delete(force=True, v=True)
    except DockerError as exc:
        if exc.status != 404:
            log.warning("could not remove container", extra={"container": container.id, "error": exc.message})
        return False
    return True


def _older(version: str, than: str) -> bool:
    """True for an API version ("1.29") below `than`; an unreadable one is not judged here."""
    try:
        return tuple(map(int, version.split("."))) < tuple(map(int, than.split(".")))
    except ValueError:
        return False


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, DockerError) else str(exc) or type(exc).__name__
