"""The compiled-module cache of the WASM executor: compile a module once, by content.

    <cache_dir>/<engine fingerprint>/<sha256 of the module bytes>.cwasm

Artifacts come from Module.serialize and are read back with Module.deserialize_file.
The fingerprint (wasmtime version + the Engine's Config flags) is in the path because
an artifact only loads into an Engine configured the same way. The directory is kept
under `max_bytes` by least-recently-used eviction (a hit touches the file's mtime);
loaded Modules are also kept in memory, so a hot module costs one hash (and a touch of its
artifact at most once a minute).
Every method blocks (compiling, file I/O): call them from a worker thread.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from importlib.metadata import version
from pathlib import Path

from wasmtime import Engine, Module, WasmtimeError

log = logging.getLogger(__name__)

SUFFIX = ".cwasm"
MEMORY_ENTRIES = 64  # Modules held in memory; each holds its compiled code
TOUCH_EVERY_S = 60.0  # a memory hit refreshes the artifact's mtime (its LRU age) at most this often


def fingerprint(config_flags: str) -> str:
    """A short name for "artifacts of this wasmtime with this Engine config"."""
    raw = f"wasmtime {version('wasmtime')} {config_flags}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


class ModuleCache:
    """Content-addressed Modules for one Engine; counters say what each load cost.

    `compilations` counts modules compiled from bytes, `disk_hits` artifacts read from
    disk, `memory_hits` Modules found in memory; `hits` is the sum of both hits.
    """

    def __init__(self, engine: Engine, directory: Path, max_bytes: int) -> None:
        self.engine = engine
        self.directory = directory
        self.max_bytes = max_bytes
        self.compilations = 0
        self.disk_hits = 0
        self.memory_hits = 0
        self._memory: OrderedDict[str, Module] = OrderedDict()
        self._touched: dict[str, float] = {}  # key -> monotonic time of its last mtime refresh
        self._lock = threading.Lock()  # runs load modules from several worker threads

    @property
    def hits(self) -> int:
        return self.disk_hits + self.memory_hits

    def load(self, wasm: bytes) -> Module:
        """The compiled Module for these bytes; raises WasmtimeError when they do not compile."""
        key = hashlib.sha256(wasm).hexdigest()
        with self._lock:
            module = self._memory.get(key)
            if module is not None:
                self._memory.move_to_end(key)
                self.memory_hits += 1
        if module is not None:
            # One utime per hit would be a syscall per job; eviction only needs minutes' accuracy.
            now = time.monotonic()
            if now - self._touched.get(key, -math.inf) >= TOUCH_EVERY_S:
                self._touched[key] = now
                self._touch(self.directory / (key + SUFFIX))
            return module
        module = self._from_disk(key)
        if module is None:
            module = Module(self.engine, wasm)  # outside the lock: compiling takes tens of ms
            with self._lock:
                self.compilations += 1
            self._store(key, module)
        with self._lock:
            self._memory[key] = module
            self._touched[key] = time.monotonic()  # just read or written: its mtime is fresh
            while len(self._memory) > MEMORY_ENTRIES:
                dropped, _ = self._memory.popitem(last=False)
                self._touched.pop(dropped, None)
        return module

    def _from_disk(self, key: str) -> Module | None:
        path = self.directory / (key + SUFFIX)
        try:
            module = Module.deserialize_file(self.engine, str(path))
        except WasmtimeError as exc:
            if path.exists():  # an artifact we cannot load (corrupt): drop it and recompile
                log.warning(
                    "dropping unreadable compiled module", extra={"path": str(path), "error": str(exc)}
                )
                path.unlink(missing_ok=True)
            return None
        with self._lock:
            self.disk_hits += 1
        self._touch(path)
        return module

    def _store(self, key: str, module: Module) -> None:
        """Write the artifact atomically (readers never see half a file), then evict."""
        path = self.directory / (key + SUFFIX)
        tmp = path.with_name(f".{key}.{threading.get_ident()}.tmp")
        # Made here, in the worker thread, not in __init__: the executor is built on the loop.
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(module.serialize())
        os.replace(tmp, path)
        self.evict()

    def evict(self) -> int:
        """Remove least-recently-used artifacts until the directory fits; the count removed."""
        entries = []
        for p in self.directory.glob("*" + SUFFIX):
            try:
                st = p.stat()
            except FileNotFoundError:  # another thread evicted it
                continue
            entries.append((st.st_mtime, st.st_size, p))
        total = sum(size for _, size, _ in entries)
        removed = 0
        for _, size, p in sorted(entries, key=lambda e: e[0]):
            if total <= self.max_bytes:
                break
            p.unlink(missing_ok=True)
            total -= size
            removed += 1
        return removed

    @staticmethod
    def _touch(path: Path) -> None:
        try:
            os.utime(path)
        except FileNotFoundError:  # evicted from disk; the in-memory Module still serves
            pass
