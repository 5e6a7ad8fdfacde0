"""The node's claim on its data_dir: one node process per data_dir, private to the node's user.

An exclusive flock on `<data_dir>/computenode.pid`, held for the node's life and released by the
kernel when the process dies (kill -9 included), so a stale file never blocks a restart.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from computenode.errors import DataDirInUse

PID_FILE = "computenode.pid"
PID_WIDTH = 16


class DataDirClaim:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"<DataDirClaim {self.data_dir} held={self._fd is not None}>"

    def acquire(self) -> None:
        """Create data_dir, make it private (0700) and lock it; DataDirInUse when another process holds it."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)  # private to the node's user, whoever made it before
        fd = os.open(self.data_dir / PID_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise DataDirInUse(str(self.data_dir), holder) from None
        # Written in place at a fixed width, never truncated: on a full disk the block it already
        # has is all it needs.
        os.pwrite(fd, f"{os.getpid()}\n".ljust(PID_WIDTH).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # the file stays: unlinking it would race a node starting meanwhile
            self._fd = None
