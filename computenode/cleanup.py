"""Disk and store cleanup: work dirs and published results past their age, and whole jobs past
retention.history_for, found by their stored timestamps, never by listing the tree.

Each pass selects what has expired in SQL, through indexes (store migration 5), in batches of
BATCH rows: the SQL runs on the store's thread and the file removals in a worker thread, so the
event loop only hands batches on, and other store calls get their turn between batches.

- Work dirs (`executions/<id>`): the runner removes them when an execution ends; this pass
  catches what a crash or retention.keep_failed_for left, once per execution, by a cursor over
  the executions' end times kept in the store's meta table (a terminal execution never changes).
- Published local results (`published/<id>.tar.gz`, publishers/local.py): after
  retention.results_max_age, by a second such cursor.
- Jobs whose every execution ended more than retention.history_for ago: their files, then their
  rows (executions, their history) are deleted, leaving a tombstone (store.Tombstone) so the ID
  is never reused and a replayed signed submission names the deleted job (errors.JobDeleted).
  Callbacks are deleted when delivered (callbacks.py); one still queued stays and is delivered.
- At start-up only, one listing of both directories removes entries whose execution the store
  does not know (left by a crash before its row was written, or after it was deleted).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from computenode.config import RetentionConfig
from computenode.disk import tree_size
from computenode.store import Store

log = logging.getLogger(__name__)

BATCH = 500  # rows per store transaction, and paths per removal in the worker thread
# A work dir is left this long after its execution ended: the runner removes it itself then, and
# a cancelled task may still be unwinding in it (Compute.cancel waits for it).
SWEEP_GRACE_S = 60.0
DIRS_CURSOR = "cleanup.work_dirs"  # meta keys: "<updated_at> <execution id>" swept so far
ARCHIVES_CURSOR = "cleanup.archives"
ARCHIVE_SUFFIX = ".tar.gz"


@dataclass(slots=True)
class Swept:
    """What one pass removed."""

    bytes_freed: int = 0
    paths: int = 0
    jobs: int = 0
    executions: int = 0
    batches: list[int] = field(default_factory=list)  # rows deleted by each transaction

    def __bool__(self) -> bool:
        return bool(self.paths or self.jobs)


class Cleaner:
    def __init__(
        self,
        store: Store,
        executions_root: Path,
        published_root: Path,
        retention: RetentionConfig,
        batch: int = BATCH,
        logs_root: Path | None = None,
    ) -> None:
        self.store = store
        self.executions_root = executions_root
        self.published_root = published_root
        self.logs_root = logs_root or executions_root.parent / "logs"
        self.retention = retention
        self.batch = batch

    def work_dir(self, execution_id: str) -> Path:
        return self.executions_root / execution_id  # Runner.work_dir

    def archive(self, execution_id: str) -> Path:
        return self.published_root / f"{execution_id}{ARCHIVE_SUFFIX}"  # LocalPublisher.path_for

    def results(self, execution_id: str) -> list[Path]:
        """What a published execution leaves: its archive and its kept logs (Runner.kept_log)."""
        return [self.archive(execution_id), self.logs_root / execution_id]

    async def run(self, now: float | None = None) -> Swept:
        """One pass; `now` (a time.time()) is for tests."""
        now = time.time() if now is None else now
        r, out = self.retention, Swept()
        await self._sweep(
            out, DIRS_CURSOR, now - max(r.keep_failed_for, SWEEP_GRACE_S), lambda e: [self.work_dir(e)]
        )
        if r.results_max_age > 0:
            await self._sweep(out, ARCHIVES_CURSOR, now - r.results_max_age, self.results)
        if r.history_for > 0:
            await self._expire(out, now - r.history_for)
        if out:
            log.info(
                "cleanup",
                extra={
                    "bytes_freed": out.bytes_freed,
                    "jobs_deleted": out.jobs,
                    "executions_deleted": out.executions,
                },
            )
        return out

    async def _sweep(self, out: Swept, key: str, until: float, paths: Callable[[str], list[Path]]) -> None:
        """Remove `paths(id)` of every execution that ended after the cursor `key` and by `until`."""
        cursor = _cursor(await self.store.get_meta(key))
        while True:
            rows = await self.store.ended_after(cursor, until, self.batch)
            if not rows:
                return
            freed, removed = await asyncio.to_thread(_remove_all, [p for _, eid in rows for p in paths(eid)])
            out.bytes_freed, out.paths = out.bytes_freed + freed, out.paths + removed
            cursor = rows[-1]
            await self.store.set_meta(key, f"{cursor[0]!r} {cursor[1]}")
            if len(rows) < self.batch:
                return

    async def _expire(self, out: Swept, before: float) -> None:
        """Delete the jobs whose executions all ended before `before`, files first, then rows."""
        cursor: tuple[float, str] | None = (0.0, "")
        while cursor is not None:
            found, cursor = await self.store.expired_jobs(before, cursor, self.batch)
            if not found:
                continue
            eids = [eid for ids in found.values() for eid in ids]
            paths = [self.work_dir(e) for e in eids] + [p for e in eids for p in self.results(e)]
            freed, removed = await asyncio.to_thread(_remove_all, paths)
            jobs, executions = await self.store.delete_jobs(list(found), before)
            out.bytes_freed, out.paths = out.bytes_freed + freed, out.paths + removed
            out.jobs, out.executions = out.jobs + len(jobs), out.executions + executions
            out.batches.append(executions + len(jobs))

    async def sweep_orphans(self) -> Swept:
        """Remove work dirs and archives of executions the store does not know (at start-up: one
        listing of each directory, looked up BATCH names at a time)."""
        out = Swept()
        for root in (self.executions_root, self.logs_root):
            names = await asyncio.to_thread(_names, root)
            await self._orphans(out, {name: root / name for name in names})
        archives: dict[str, Path] = {}
        stray: list[Path] = []
        for name in await asyncio.to_thread(_names, self.published_root):
            if name.endswith(ARCHIVE_SUFFIX) and not name.startswith("."):
                archives[name.removesuffix(ARCHIVE_SUFFIX)] = self.published_root / name
            elif not name.endswith(f".{os.getpid()}.tmp"):  # a publish of this process is writing it
                stray.append(self.published_root / name)  # a temp archive a crash left
        await self._orphans(out, archives)
        freed, removed = await asyncio.to_thread(_remove_all, stray)
        out.bytes_freed, out.paths = out.bytes_freed + freed, out.paths + removed
        if out:
            log.info("orphaned files removed", extra={"bytes_freed": out.bytes_freed, "paths": out.paths})
        return out

    async def _orphans(self, out: Swept, by_id: dict[str, Path]) -> None:
        ids = list(by_id)
        for i in range(0, len(ids), self.batch):
            chunk = ids[i : i + self.batch]
            known = await self.store.known_executions(chunk)
            freed, removed = await asyncio.to_thread(_remove_all, [by_id[e] for e in chunk if e not in known])
            out.bytes_freed, out.paths = out.bytes_freed + freed, out.paths + removed


async def clean(cleaner: Cleaner, orphans: bool = False) -> int:
    """One cleanup pass (after the start-up orphan sweep when `orphans`); the bytes freed."""
    freed = (await cleaner.sweep_orphans()).bytes_freed if orphans else 0
    return freed + (await cleaner.run()).bytes_freed


def _cursor(stored: str | None) -> tuple[float, str]:
    if not stored:
        return (0.0, "")
    at, _, eid = stored.partition(" ")
    return (float(at), eid)


def _names(root: Path) -> list[str]:
    try:
        return os.listdir(root)
    except FileNotFoundError:
        return []


def _remove_all(paths: list[Path]) -> tuple[int, int]:
    """Remove each path that exists (a tree or a file, a link not followed); the bytes freed and
    how many were there. One lstat for a path already gone, the usual case."""
    freed = removed = 0
    for path in paths:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        removed += 1
        if stat.S_ISDIR(st.st_mode):
            freed += tree_size(path)
            shutil.rmtree(path, ignore_errors=True)
        else:
            freed += st.st_size
            path.unlink(missing_ok=True)
    return freed, removed
