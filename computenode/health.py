"""Dependency health, checked in the background so bids and /readyz never wait on a probe."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[str | None]]
CHECK_TIMEOUT_S = 5.0


class Health:
    def __init__(self, checks: Mapping[str, Check], data_dir: Path, min_free_disk: int) -> None:
        self.checks = dict(checks)
        self.data_dir = data_dir
        self.min_free_disk = min_free_disk
        self.reasons: dict[str, str | None] = {}

    async def refresh(self) -> dict[str, str | None]:
        names = list(self.checks)
        results = await asyncio.gather(*(self._one(self.checks[n]) for n in names))
        reasons = dict(zip(names, results, strict=True))
        reasons["disk"] = await asyncio.to_thread(self._disk)  # statvfs can wait on a slow disk
        for name, reason in reasons.items():
            if reason != self.reasons.get(name, "unchecked"):
                (log.warning if reason else log.info)(
                    "dependency %s", "down" if reason else "up", extra={"dependency": name, "reason": reason}
                )
        self.reasons = reasons
        return reasons

    async def _one(self, check: Check) -> str | None:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                return await check()
        except TimeoutError:
            return f"no answer within {CHECK_TIMEOUT_S:.0f} s"
        except Exception as exc:  # a check that raises is a dependency that is down
            return f"{type(exc).__name__}: {exc}"

    def _disk(self) -> str | None:
        try:
            free = shutil.disk_usage(self.data_dir).free
        except OSError as exc:
            return f"cannot read free disk of {self.data_dir}: {exc.strerror}"
        if free < self.min_free_disk:
            return f"free disk {free >> 20} MiB is below the threshold {self.min_free_disk >> 20} MiB"
        return None

    def reason(self, name: str) -> str | None:
        """The last known reason `name` is down; None when up (or not checked)."""
        return self.reasons.get(name)

    async def run(self, stop: asyncio.Event, interval_s: float = 5.0) -> None:
        while not stop.is_set():
            await self.refresh()
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except TimeoutError:
                pass
