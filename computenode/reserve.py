"""Room to record failures on a full disk: a file kept in data_dir, given back when the disk fills.

The store needs a little space to write that an execution failed, and the node needs some to
start at all (the store's WAL, the pid file). The reserve is that space, held in advance: when a
write finds the disk full it is released and the write tried again; when space returns it is
made again.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

RESERVE_BYTES = 8 << 20
NAME = "disk-reserve"


class DiskReserve:
    def __init__(self, data_dir: Path, size: int = RESERVE_BYTES) -> None:
        self.path = data_dir / NAME
        self.size = size

    def __repr__(self) -> str:
        return f"<DiskReserve {self.path} held={self.held()}>"

    def held(self) -> bool:
        try:
            return self.path.stat().st_size >= self.size
        except FileNotFoundError:
            return False

    def release(self) -> bool:
        """Give the space back; True when there was some to give. Blocking (a thread is fine)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        log.warning("disk full: released the disk reserve to record failures", extra={"path": str(self.path)})
        return True

    def release_if_low(self) -> None:
        """At start-up: give the reserve back when the disk is nearly full, so the store can open."""
        try:
            low = shutil.disk_usage(self.path.parent).free < self.size
        except OSError:
            low = True
        if low:
            self.release()

    def ensure(self) -> None:
        """Hold the reserve again when the disk has room for it and as much besides. Blocking."""
        if self.held():
            return
        try:
            if shutil.disk_usage(self.path.parent).free < 2 * self.size:
                return
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)  # real blocks, not a sparse file
            finally:
                os.close(fd)
        except OSError as exc:  # raced with a writer for the last blocks: try again next round
            self.path.unlink(missing_ok=True)
            log.info("disk reserve not made yet", extra={"reason": str(exc)})
