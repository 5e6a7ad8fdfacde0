"""Bytes a file or directory tree takes: one walk, shared by cleanup, caches and storage sources.

Blocking (it lists the whole tree): call it in a thread.
"""

from __future__ import annotations

import os
from pathlib import Path


def tree_size(path: Path) -> int:
    """Bytes of the regular files under `path` (or of `path` itself), symlinks not followed;
    0 for what disappears meanwhile (a cache entry evicted, a dir being removed)."""
    try:
        if not path.is_dir() or path.is_symlink():
            return path.lstat().st_size
    except FileNotFoundError:
        return 0
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total
