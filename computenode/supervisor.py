"""Background loops, supervised: a loop that raises is logged, restarted with backoff and reported.

One supervisor holds every long-lived loop of a node (callbacks, health, bid expiry, reaper,
cleanup, watchdog). A loop that fails shows in `/readyz` through `check()` until it has run a
full interval cleanly again; the others go on untouched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

Loop = Callable[[asyncio.Event], Awaitable[None]]  # runs until the event is set
Step = Callable[[], Awaitable[object]]  # one round of a periodic loop

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
HEALED_AFTER_S = 30.0  # a restarted loop that has run this long without raising is well again


@dataclass(slots=True)
class _Failure:
    error: str
    count: int
    retry_at: float


def backoff_s(failures: int) -> float:
    """1 s, 2 s, 4 s, ... up to a minute: a loop that keeps failing costs little."""
    return min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** max(0, failures - 1))


class Supervisor:
    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._failures: dict[str, _Failure] = {}

    def __repr__(self) -> str:
        return f"<Supervisor loops={sorted(self._tasks)} failing={sorted(self._failures)}>"

    def start(self, name: str, loop: Loop) -> None:
        """Run `loop(stop)` until stop is set; restart it with backoff whenever it raises."""
        self._tasks[name] = asyncio.create_task(self._keep(name, loop), name=f"loop-{name}")

    def every(self, name: str, interval_s: float, step: Step) -> None:
        """Run `step()` every `interval_s` until stop is set."""

        async def periodic(stop: asyncio.Event) -> None:
            while not stop.is_set():
                await step()
                self._failures.pop(name, None)  # a clean round clears the report
                await _sleep_unless(stop, interval_s)

        self.start(name, periodic)

    async def check(self) -> str | None:
        """The /readyz check: None when every loop runs, else which loops failed and why."""
        now = time.monotonic()
        for name in [n for n, f in self._failures.items() if now - f.retry_at > HEALED_AFTER_S]:
            del self._failures[name]
        if not self._failures:
            return None
        return "; ".join(
            f"{name} failed {f.count}x ({f.error}), restarting in {max(0.0, f.retry_at - now):.0f} s"
            for name, f in sorted(self._failures.items())
        )

    async def wait(self) -> None:
        """Wait for every loop to end (they end once stop is set)."""
        if self._tasks:
            await asyncio.gather(*self._tasks.values())

    async def aclose(self) -> None:
        """Cancel whatever still runs and wait for it (start-up failed, or a loop ignores stop)."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()

    async def _keep(self, name: str, loop: Loop) -> None:
        while not self.stop.is_set():
            try:
                await loop(self.stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                count = self._failures[name].count + 1 if name in self._failures else 1
                wait = backoff_s(count)
                self._failures[name] = _Failure(
                    f"{type(exc).__name__}: {exc}", count, time.monotonic() + wait
                )
                log.exception("background loop failed", extra={"loop": name, "retry_in_s": wait})
                await _sleep_unless(self.stop, wait)
            else:
                return


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less when `stop` is set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
