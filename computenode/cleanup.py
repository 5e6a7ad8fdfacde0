"""Disk cleanup: execution dirs nobody owns any more, and published local results past their age."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path

from computenode.disk import tree_size
from computenode.store import NotFound, Store

log = logging.getLogger(__name__)


def _remove(path: Path) -> int:
    freed = tree_size(path)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    return freed


async def clean(
    store: Store, executions_root: Path, published_root: Path, keep_failed_s: float, results_max_age_s: float
) -> int:
    """Remove what is no longer needed; the bytes freed. Every file system call runs in a thread."""
    freed = 0
    now = time.time()
    for d in await asyncio.to_thread(_entries, executions_root):
        try:
            ex = await store.get(d.name)
        except NotFound:
            ex = None  # a dir the store never knew: left by a crash before the row was written
        if ex is not None and (not ex.state.is_terminal or now - ex.updated_at < keep_failed_s):
            continue
        freed += await asyncio.to_thread(_remove, d)
    if results_max_age_s > 0:
        freed += await asyncio.to_thread(_remove_older, published_root, now - results_max_age_s)
    if freed:
        log.info("disk cleanup", extra={"bytes_freed": freed})
    return freed


def _entries(root: Path) -> list[Path]:
    return list(root.iterdir()) if root.is_dir() else []


def _remove_older(root: Path, cutoff: float) -> int:
    """Remove the entries of root last modified before cutoff (a time.time()); the bytes freed."""
    freed = 0
    for f in _entries(root):
        try:
            old = f.stat().st_mtime < cutoff
        except FileNotFoundError:
            continue
        if old:
            freed += _remove(f)
    return freed
