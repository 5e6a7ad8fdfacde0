"""The WASM executor: runs one shard as a WASI (preview1) command in wasmtime.

One Engine per executor (epoch interruption on), a ticker thread that advances its
epoch while some run is active (parked otherwise, so an idle node spends no CPU on it),
and one Store per execution run on a thread of a small pool of reused daemon threads.
The epoch deadline callback of each Store checks the run's wall-clock deadline and its
cancel switch, so both the job's Timeout and a cancel stop a module that never returns.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import logging
import math
import os
import posixpath
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import wasmtime._bindings as wasmtime_ffi  # the epoch callback is not in the public API (pinned <51)
from wasmtime import (
    Config,
    Engine,
    ExitTrap,
    FuncType,
    Linker,
    Module,
    Store,
    Trap,
    WasiConfig,
    WasmtimeError,
)

from computenode.config import WasmConfig
from computenode.errors import ExecutionFailed, InvalidModule, JobTimeout, SpecError
from computenode.executors.base import ExecutionRequest
from computenode.executors.results import NO_EXIT_CODE, STDERR, STDOUT, collect, output_dirs
from computenode.executors.wasm_cache import ModuleCache, fingerprint
from computenode.model import RunCommandResult
from computenode.volume import InputVolume

log = logging.getLogger(__name__)
T = TypeVar("T")

EPOCH_PERIOD_S = 0.01  # how often the engine's epoch advances: the timeout/cancel resolution
DEFAULT_ENTRY_POINT = "_start"
STOP_GRACE_S = 1.0  # how long a stopped run may take to leave a host call
WORKERS = 64  # run threads at most; the scheduler's capacity keeps concurrent runs well below
SHARED_ROOTS = 256  # shared roots remembered; past that each run checks its root exists
WORKER_IDLE_S = 60.0  # a run thread unused this long ends, so an idle node holds none

_CALLBACK_ARGS = wasmtime_ffi._wasmtime_store_epoch_deadline_callback.argtypes
_EpochCallback = _CALLBACK_ARGS[1]
_NO_FINALIZER = _CALLBACK_ARGS[3]()  # a NULL function pointer: no finalizer
_CONTINUE = 0  # WASMTIME_UPDATE_DEADLINE_CONTINUE


class _Interrupt:
    """The stop switch of one run, read by the epoch callback in the wasm thread.

    The Store's deadline is one tick ahead, so the callback runs every tick; it either
    extends the deadline by one more tick or returns an error, which wasmtime raises
    as a trap out of the running module. `reason` says which stop it was.
    """

    def __init__(self, timeout_s: float) -> None:
        self.deadline = time.monotonic() + timeout_s if timeout_s > 0 else math.inf
        self.reason: str | None = None  # "timeout" or "cancel" once it fired
        self.abandoned = False  # the caller has moved on: write nothing into the results dir
        self._cancelled = threading.Event()
        self._callback = _EpochCallback(self._on_epoch)  # kept alive as long as the run

    def cancel(self) -> None:
        self._cancelled.set()

    def abandon(self) -> None:
        self.abandoned = True
        self._cancelled.set()

    def install(self, store: Store) -> None:
        wasmtime_ffi.wasmtime_store_epoch_deadline_callback(store.ptr(), self._callback, None, _NO_FINALIZER)
        store.set_epoch_deadline(1)

    def _on_epoch(self, _ctx: object, _data: object, delta: ctypes.Array, kind: ctypes.Array) -> int:
        if self._cancelled.is_set():
            self.reason = "cancel"
        elif time.monotonic() >= self.deadline:
            self.reason = "timeout"
        else:
            delta[0] = 1
            kind[0] = _CONTINUE
            return 0
        err = wasmtime_ffi.wasmtime_error_new(f"interrupted: {self.reason}".encode())
        return ctypes.cast(err, ctypes.c_void_p).value or 0  # wasmtime takes ownership


@dataclass(frozen=True, slots=True)
class _Named:
    """A compiled module and the name it is known by (argv[0], import namespace)."""

    name: str
    module: Module


class WasmExecutor:
    """Runs WASM jobs; `cache` (a ModuleCache) shows what each module load cost."""

    def __init__(self, cfg: WasmConfig, cache_dir: Path, workers: int = WORKERS) -> None:
        self.cfg = cfg
        config = Config()
        config.epoch_interruption = True
        self.engine = Engine(config)
        # The fingerprint names the Config flags above: artifacts only load into a like Engine.
        self.cache = ModuleCache(self.engine, cache_dir / "modules" / fingerprint("epoch"), cfg.cache_size)
        self._roots = cache_dir / "roots"
        self._linker = Linker(self.engine)  # WASI only; shared by runs without import modules
        self._linker.define_wasi()
        self._roots_made = False
        self._shared: dict[tuple[str, ...], Path] = {}  # output paths -> their shared root
        self._shared_lock = threading.Lock()
        self._active: set[_Interrupt] = set()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._ticking = threading.Condition()  # guards _active and _ticker; wakes the parked ticker
        self.ticks = 0  # epochs advanced: stays still while no run is active
        self._parked = False
        self.pool = WorkerPool(workers)

    @property
    def running(self) -> int:
        """Runs whose worker thread has not ended yet (a stopped run ends at the next tick)."""
        return len(self._active)

    async def check(self) -> str | None:
        return "the wasm executor is closed" if self._stop.is_set() else None

    async def run(self, request: ExecutionRequest) -> RunCommandResult:
        """Run the entry module on a pool thread; on cancel stop it, keep its output, re-raise."""
        if self._stop.is_set():
            raise ExecutionFailed("the wasm executor is closed", retryable=True)
        if request.spec.outputs:
            outputs = await asyncio.to_thread(output_dirs, request.results_dir, list(request.spec.outputs))
        else:  # one mkdir of the node's own dir: cheaper on the loop than a thread hop
            request.results_dir.mkdir(parents=True, exist_ok=True)
            outputs = []
        interrupt = _Interrupt(request.timeout_s)
        self._track(interrupt)
        future, task = self.pool.submit(self._run_blocking, request, outputs, interrupt)
        # Whatever happens to this task, the ticker keeps going until the thread ended.
        future.add_done_callback(lambda f: self._finished(f, interrupt))
        limit = request.timeout_s + STOP_GRACE_S if request.timeout_s > 0 else None
        try:
            done, _ = await asyncio.wait({future}, timeout=limit)
        except asyncio.CancelledError:
            interrupt.cancel()  # the module traps at the next epoch tick
            done, _ = await asyncio.wait({future}, timeout=STOP_GRACE_S)
            if not done:
                self._abandon(request, interrupt, task)
            raise
        if done:
            return future.result()
        # Still inside a host call (a WASI sleep) past its deadline: epochs only reach
        # wasm code, so leave the thread behind, writing nothing more.
        self._abandon(request, interrupt, task)
        reason = f"timed out after {request.timeout_s:g} s"
        result = await asyncio.to_thread(collect, request.results_dir, NO_EXIT_CODE, reason)
        raise JobTimeout(reason, result=result)

    def _abandon(self, request: ExecutionRequest, interrupt: _Interrupt, task: _Task) -> None:
        interrupt.abandon()
        self.pool.detach(task)
        log.warning("wasm run left behind in a host call", extra={"execution_id": request.execution_id})

    async def aclose(self) -> None:
        """Stop every run and the epoch ticker; idempotent."""
        with self._ticking:
            for interrupt in self._active:
                interrupt.cancel()
            self._stop.set()
            self._ticking.notify_all()
            ticker = self._ticker
        if ticker is not None:
            # The join waits up to a few epochs (it outlives aclose() while a run is stuck): off the loop.
            await asyncio.to_thread(ticker.join, 5 * EPOCH_PERIOD_S)

    @property
    def ticker_parked(self) -> bool:
        """The ticker waits for a run without ticking (or was never started, or ended)."""
        with self._ticking:
            return self._ticker is None or self._parked

    def _track(self, interrupt: _Interrupt) -> None:
        with self._ticking:
            self._active.add(interrupt)
            if self._ticker is None:
                self._ticker = threading.Thread(target=self._tick, name="wasm-epoch", daemon=True)
                self._ticker.start()
            self._ticking.notify()

    def _finished(self, future: asyncio.Future[RunCommandResult], interrupt: _Interrupt) -> None:
        with self._ticking:
            self._active.discard(interrupt)
        if not future.cancelled():
            future.exception()  # retrieved: an abandoned run's error is nobody's

    def _tick(self) -> None:
        # Ticks only while some run is active: a run sees its deadline and cancel switch
        # only on a tick. Parked otherwise; after close() it ends once the last run stopped.
        while True:
            with self._ticking:
                while not self._active:
                    if self._stop.is_set():
                        self._ticker = None
                        return
                    self._parked = True
                    self._ticking.wait()
                self._parked = False
            time.sleep(EPOCH_PERIOD_S)
            self.engine.increment_epoch()
            self.ticks += 1

    # --- in the worker thread ---

    def _run_blocking(
        self, request: ExecutionRequest, outputs: list[tuple[Path, str]], interrupt: _Interrupt
    ) -> RunCommandResult:
        if request.entry_module is None:
            raise InvalidModule("the job has no entry module (Spec.Wasm.EntryModule)")
        entry = self._load(request.entry_module, "entry module")
        imports = [self._load(vol, "import module") for vol in request.import_modules]
        check_entry_point(entry, request.spec.wasm.entry_point or DEFAULT_ENTRY_POINT)
        own_root = bool(request.inputs)  # only inputs need a root laid out for this one run
        root = self._own_root(request.execution_id) if own_root else self._shared_root(outputs)
        try:
            if own_root:
                build_root(root, request.inputs, outputs)
            wasi = wasi_config(request, entry.name, root, outputs)
            code, failure = self._execute(request, entry, imports, wasi, interrupt)
        finally:
            if own_root:
                shutil.rmtree(root, ignore_errors=True)
        if interrupt.abandoned:
            raise ExecutionFailed("abandoned after its deadline")
        self._cap_streams(request.results_dir)
        if failure is None:
            return collect(request.results_dir, code)
        if interrupt.reason == "timeout":
            reason = f"timed out after {request.timeout_s:g} s"
            raise JobTimeout(reason, result=collect(request.results_dir, NO_EXIT_CODE, reason))
        if interrupt.reason == "cancel":
            raise ExecutionFailed("cancelled", result=collect(request.results_dir, NO_EXIT_CODE, "cancelled"))
        raise ExecutionFailed(failure, result=collect(request.results_dir, NO_EXIT_CODE, failure))

    def _own_root(self, execution_id: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{execution_id}-", dir=self._roots_dir()))

    def _shared_root(self, outputs: list[tuple[Path, str]]) -> Path:
        """The read-only root of runs without inputs: empty but for their outputs' mount points.

        Runs preopen it read-only, so every run with the same output paths shares one,
        made once (the per-run mkdtemp, mkdirs and rmtree of build_root are what it saves).
        """
        guests = tuple(sorted({posixpath.normpath(guest) for _, guest in outputs}))
        with self._shared_lock:
            root = self._shared.get(guests)
            if root is not None:
                return root
            key = hashlib.sha256("\0".join(guests).encode()).hexdigest()[:16]
            root = self._roots / f"shared-{key}"
            if not root.is_dir():  # made by an earlier node process otherwise
                tmp = Path(tempfile.mkdtemp(prefix=".shared-", dir=self._roots_dir()))
                build_root(tmp, (), outputs)
                try:
                    os.rename(tmp, root)
                except OSError:  # made meanwhile by another process on this data dir
                    shutil.rmtree(tmp, ignore_errors=True)
            if len(self._shared) < SHARED_ROOTS:
                self._shared[guests] = root
            return root

    def _roots_dir(self) -> Path:
        if not self._roots_made:
            self._roots.mkdir(parents=True, exist_ok=True)
            self._roots_made = True
        return self._roots

    def _load(self, vol: InputVolume, role: str) -> _Named:
        # An inline module comes as bytes (storage/inline.py module_volume): no file to read.
        path = vol.host_path if vol.data is not None else module_file(vol)
        try:
            module = self.cache.load(vol.data if vol.data is not None else path.read_bytes())
        except WasmtimeError as exc:
            raise InvalidModule(
                f"the {role} {path.name} is not a valid WASM module: {first_line(exc)}"
            ) from exc
        return _Named(vol.spec.name or path.stem, module)

    def _execute(
        self,
        request: ExecutionRequest,
        entry: _Named,
        imports: list[_Named],
        wasi: WasiConfig,
        interrupt: _Interrupt,
    ) -> tuple[int, str | None]:
        """(exit code, None) or (-1, the trap's message). The Store lives only in here, so
        its stdout/stderr files are closed when this returns."""
        store = Store(self.engine)
        if request.resources.memory > 0:
            # Past the limit memory.grow returns -1: the module sees an allocation failure.
            store.set_limits(memory_size=request.resources.memory)
        interrupt.install(store)
        store.set_wasi(wasi)
        linker = self._link(store, imports)
        check_imports(store, linker, entry, imports)
        try:
            instance = linker.instantiate(store, entry.module)
        except WasmtimeError as exc:
            raise InvalidModule(f"cannot instantiate module {entry.name}: {first_line(exc)}") from exc
        start = instance.exports(store)[request.spec.wasm.entry_point or DEFAULT_ENTRY_POINT]
        try:
            start(store)  # type: ignore[operator]  # checked to be a () -> () function
        except ExitTrap as exc:  # proc_exit, including proc_exit(0)
            return exc.code, None
        except (Trap, WasmtimeError) as exc:
            return NO_EXIT_CODE, trap_message(exc)
        return 0, None

    def _link(self, store: Store, imports: list[_Named]) -> Linker:
        """A linker with WASI and each import module instantiated under its name."""
        if not imports:
            return self._linker
        linker = Linker(self.engine)
        linker.define_wasi()
        for imp in imports:
            try:
                linker.define_instance(store, imp.name, linker.instantiate(store, imp.module))
            except WasmtimeError as exc:
                raise InvalidModule(
                    f"cannot instantiate import module {imp.name}: {first_line(exc)}"
                ) from exc
        return linker

    def _cap_streams(self, results_dir: Path) -> None:
        # wasmtime writes the files itself, so the cap applies after the run: a module
        # can fill the disk past it while it runs (docs/wasm-executor.md).
        for name in (STDOUT, STDERR):
            path = results_dir / name
            try:
                size = path.stat().st_size  # one stat, not exists() and then stat()
            except FileNotFoundError:
                continue
            if size > self.cfg.stream_cap:
                os.truncate(path, self.cfg.stream_cap)


class _Task:
    """One call handed to the pool, settled into a future of the loop that submitted it."""

    __slots__ = ("args", "detached", "fn", "future", "loop", "started")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> None:
        self.loop = loop
        self.fn = fn
        self.args = args
        self.future: asyncio.Future[Any] = loop.create_future()
        self.started = False
        self.detached = False  # its thread has left the pool (the run was left behind)

    def settle(self, result: Any, exc: BaseException | None) -> None:
        if self.future.done():
            return
        if exc is not None:
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)


class WorkerPool:
    """Reused daemon threads that each run one blocking call at a time, at most `size` at once.

    Not a concurrent.futures pool: a run must not hold a thread of the loop's default
    executor (the store and hashing need them), and a run left behind in a host call must
    not keep the process from exiting, as that pool's threads do (they are joined at exit).
    A run that is left behind is `detach`ed: its thread no longer counts against `size` and
    ends once the call returns, so stuck runs never starve the pool.
    """

    def __init__(self, size: int = WORKERS, idle_s: float = WORKER_IDLE_S) -> None:
        self.size = size
        self.idle_s = idle_s
        self.started = 0  # threads ever started: reuse shows as started < runs
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Task] = queue.SimpleQueue()
        self._threads = 0  # threads in the pool (detached ones excluded)
        self._idle = 0  # of those, waiting for a task
        self._pending = 0  # tasks queued, not yet taken

    @property
    def threads(self) -> int:
        return self._threads

    def submit(self, fn: Callable[..., T], *args: Any) -> tuple[asyncio.Future[T], _Task]:
        """fn(*args) on a pool thread, as a future of the running loop."""
        task = _Task(asyncio.get_running_loop(), fn, args)
        with self._lock:
            self._queue.put(task)
            self._pending += 1
            if self._pending > self._idle and self._threads < self.size:
                self._spawn()
        return task.future, task

    def detach(self, task: _Task) -> None:
        """Take a stuck task's thread out of the count, and replace it when work waits."""
        with self._lock:
            if task.detached:
                return
            task.detached = True
            if task.started:
                self._threads -= 1
                if self._pending > self._idle and self._threads < self.size:
                    self._spawn()

    def _spawn(self) -> None:  # with the lock held
        self._threads += 1
        self._idle += 1  # counted idle from the start, so the next submit does not spawn another
        self.started += 1
        threading.Thread(target=self._work, name="wasm-run", daemon=True).start()

    def _work(self) -> None:
        while True:
            try:
                task = self._queue.get(timeout=self.idle_s)
            except queue.Empty:
                with self._lock:
                    if self._pending > 0:  # queued just now, counting on this thread
                        continue
                    self._idle -= 1
                    self._threads -= 1
                    return
            with self._lock:
                self._idle -= 1
                self._pending -= 1
                skip = task.detached  # given up on before it started: do not run it
                task.started = True
            result: Any = None
            exc: BaseException | None = ExecutionFailed("abandoned before it started") if skip else None
            if not skip:
                try:
                    result = task.fn(*task.args)
                except BaseException as e:  # noqa: BLE001 - handed to the awaiting task
                    exc = e
            with self._lock:
                # detach() took this thread out of the count while it ran: it ends here.
                leave = task.detached and not skip
                if not leave:
                    self._idle += 1  # idle before the result is seen: the caller's next run reuses it
            self._post(task, result, exc)
            if leave:
                return

    @staticmethod
    def _post(task: _Task, result: Any, exc: BaseException | None) -> None:
        try:
            task.loop.call_soon_threadsafe(task.settle, result, exc)
        except RuntimeError:  # the loop is closed: nobody waits for this run any more
            pass


def module_file(vol: InputVolume) -> Path:
    """The module's file: the downloaded file, the file itself, or a directory's one .wasm file."""
    path = vol.host_file or vol.host_path
    if not path.is_dir():
        return path
    found = sorted(p for p in path.iterdir() if p.suffix == ".wasm" and p.is_file())
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise InvalidModule(
            f"the module directory {vol.spec.name or path.name} should hold exactly one .wasm file "
            f"but holds {len(found)} ({names})"
        )
    return found[0]


def check_entry_point(entry: _Named, entry_point: str) -> None:
    exports = {e.name: e.type for e in entry.module.exports}
    if entry_point not in exports:
        raise InvalidModule(
            f"function '{entry_point}' required but no WASM export with that name was found in module "
            f"{entry.name} (exports: {', '.join(sorted(exports)) or 'none'})"
        )
    t = exports[entry_point]
    if not isinstance(t, FuncType) or t.params or t.results:
        raise InvalidModule(
            f"export '{entry_point}' of module {entry.name} must be a function with no parameters "
            f"and no results, but is {describe(t)}"
        )


def check_imports(store: Store, linker: Linker, entry: _Named, imports: list[_Named]) -> None:
    """Name every import of the entry module that neither WASI nor an import module provides."""
    missing = []
    for imp in entry.module.imports:
        try:
            linker.get(store, imp.module, imp.name or "")
        except WasmtimeError:
            missing.append(f"{imp.module}::{imp.name}")
    if missing:
        provided = ", ".join(i.name for i in imports) or "none"
        raise InvalidModule(
            f"module {entry.name} imports {', '.join(missing)}, provided neither by WASI "
            f"nor by the import modules (given: {provided})"
        )


def wasi_config(
    request: ExecutionRequest, name: str, root: Path, outputs: list[tuple[Path, str]]
) -> WasiConfig:
    wasm = request.spec.wasm
    w = WasiConfig()
    w.argv = [name, *wasm.parameters]
    w.env = sorted(wasm.environment_variables.items())  # exactly these, in key order (Bacalhau)
    w.stdout_file = str(request.results_dir / STDOUT)
    w.stderr_file = str(request.results_dir / STDERR)
    # wasi-libc resolves a path against the longest matching preopen, so the
    # read-only root serves the inputs and each output's own preopen wins below it.
    w.preopen_dir(str(root), "/", fs_mutable=False)
    for host, guest in outputs:
        w.preopen_dir(str(host), posixpath.normpath(guest), fs_mutable=True)
    return w


def build_root(root: Path, inputs: tuple[InputVolume, ...], outputs: list[tuple[Path, str]]) -> None:
    """Lay the inputs out at their paths under `root` as hard links (copies across filesystems).

    WASI preopens are directories and wasmtime refuses symlinks that leave one, so a
    single-file input (a URL download, an inline file) needs a real entry in a directory.
    """
    for vol in inputs:
        dst = guest_path(root, vol.target, "Spec.inputs")
        src = vol.host_file or vol.host_path
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, symlinks=True, copy_function=link_or_copy, dirs_exist_ok=True)
        else:
            link_or_copy(src, dst)
    for _, guest in outputs:  # so that listing a parent directory shows the output
        guest_path(root, guest, "Spec.outputs").mkdir(parents=True, exist_ok=True)


def guest_path(root: Path, target: str, field: str) -> Path:
    norm = posixpath.normpath(target)
    if not target.startswith("/") or norm.startswith("/.."):
        raise SpecError([(field, f"{target!r} is not an absolute path inside the job")])
    return root / norm.lstrip("/")


def link_or_copy(src: str | Path, dst: str | Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or protected_hardlinks on a file we do not own
        shutil.copy2(src, dst)


def describe(t: object) -> str:
    if isinstance(t, FuncType):
        params = ", ".join(str(p) for p in t.params)
        results = ", ".join(str(r) for r in t.results)
        return f"a function ({params}) -> ({results})"
    return f"a {type(t).__name__.removesuffix('Type').lower()}"


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def trap_message(exc: BaseException) -> str:
    """The trap's own words ("wasm trap: wasm `unreachable` instruction executed"),
    not wasmtime's backtrace header."""
    text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Caused by:" in lines:
        after = lines[lines.index("Caused by:") + 1 :]
        if after:
            return after[-1]
    return first_line(exc)
