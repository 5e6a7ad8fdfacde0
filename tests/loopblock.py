"""A pytest plugin: a test fails when a callback of an event loop blocked that loop.

Every callback an asyncio loop runs goes through ``asyncio.events.Handle._run``
(a task's step, a wake-up, a timer, a transport's read); while a test runs,
that method is wrapped to time each callback and to record those over the
limits below. The test then fails at teardown with the offending callbacks
listed, each with the coroutine chain of its task, so the await just after the
blocking code is named.

What is measured, and why:

* The thread's CPU time (``time.thread_time``) over ``CPU_LIMIT_S`` (50 ms).
  CPU time, not wall time: on the shared two-core test machine a callback
  that ran 1 ms can take 100 ms of wall time when the thread is not scheduled,
  or waits for the GIL held by a ``to_thread`` worker; its CPU time stays 1 ms.
  Cyclic garbage collections run inside whatever callback allocated last; their
  CPU time is not the callback's doing and is subtracted (``gc.callbacks``).
* Wall time over ``WALL_LIMIT_S`` (1 s). CPU time misses a callback that
  blocks in a sleeping syscall (``time.sleep``, waiting for the disk, a
  synchronous HTTP call): it costs no CPU. A wall bound that low load cannot
  reach still catches the gross cases; a 100 ms file wait is not caught, which
  is why file work goes to ``asyncio.to_thread`` by rule rather than by test.

Tests opt out of nothing: the detector runs for every test, sync tests too
(``asyncio.run`` inside them). `LoopBlockDetector` is also usable on its own,
as tests/test_loopblock.py does; the innermost active detector gets the records.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import tracemalloc
from asyncio import events
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

CPU_LIMIT_S = 0.050
WALL_LIMIT_S = 1.0


@dataclass(frozen=True, slots=True)
class Block:
    """One callback over a limit: its CPU and wall seconds and what it was."""

    cpu_s: float
    wall_s: float
    what: str

    def __str__(self) -> str:
        return f"{self.cpu_s * 1000:.0f} ms CPU, {self.wall_s * 1000:.0f} ms wall: {self.what}"


class LoopBlockDetector:
    """Records callbacks over the limits while entered (`with LoopBlockDetector() as d:`)."""

    def __init__(self, cpu_limit_s: float = CPU_LIMIT_S, wall_limit_s: float = WALL_LIMIT_S) -> None:
        self.cpu_limit_s = cpu_limit_s
        self.wall_limit_s = wall_limit_s
        self.blocks: list[Block] = []

    def __enter__(self) -> LoopBlockDetector:
        _install()
        with _lock:
            _active.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        with _lock:
            _active.remove(self)

    def report(self) -> str:
        lines = [f"the event loop was blocked by {len(self.blocks)} callback(s) (tests/loopblock.py):"]
        lines += [f"  {b}" for b in self.blocks]
        return "\n".join(lines)


_active: list[LoopBlockDetector] = []
_lock = threading.Lock()
_original_run = events.Handle._run
_gc = threading.local()  # per thread: CPU seconds spent in gc so far, and when the running one started


def _gc_seconds() -> float:
    return getattr(_gc, "total", 0.0)


def _on_gc(phase: str, _info: dict[str, Any]) -> None:
    if phase == "start":
        _gc.start = time.thread_time()
    elif hasattr(_gc, "start"):
        _gc.total = _gc_seconds() + time.thread_time() - _gc.start
        del _gc.start


def _timed_run(handle: events.Handle) -> None:
    detector = _active[-1] if _active else None
    if detector is None:
        _original_run(handle)
        return
    gc0, cpu0, wall0 = _gc_seconds(), time.thread_time(), time.perf_counter()
    try:
        _original_run(handle)
    finally:
        wall = time.perf_counter() - wall0
        cpu = time.thread_time() - cpu0 - (_gc_seconds() - gc0)
        if cpu > detector.cpu_limit_s or wall > detector.wall_limit_s:
            detector.blocks.append(Block(cpu, wall, describe(handle)))


def _install() -> None:
    if events.Handle._run is not _timed_run:
        events.Handle._run = _timed_run  # type: ignore[method-assign]
        gc.callbacks.append(_on_gc)


def describe(handle: events.Handle) -> str:
    """The handle, and for a task's step the task and where each of its coroutines now waits."""
    text = repr(handle)
    task = getattr(handle._callback, "__self__", None)
    if isinstance(task, asyncio.Task):
        chain = " -> ".join(_awaiting(task.get_coro())) or "(done)"
        text += f"\n      task {task.get_name()}: {chain}"
    return text


def _awaiting(coro: Any) -> Iterator[str]:
    """`name (file:line)` of each coroutine in the await chain, outermost first."""
    seen = 0
    while coro is not None and seen < 20:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            return
        yield f"{frame.f_code.co_name} ({frame.f_code.co_filename}:{frame.f_lineno})"
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        seen += 1


def pytest_report_header() -> str:
    if tracemalloc.is_tracing():
        return "loopblock: off (tracemalloc is tracing: it multiplies the CPU time of every allocation)"
    return f"loopblock: a callback over {CPU_LIMIT_S * 1000:.0f} ms CPU or {WALL_LIMIT_S:g} s wall fails its test"


@pytest.fixture(autouse=True)
def _fail_on_loop_block() -> Iterator[None]:
    # Autouse and sync, so it is set up before and torn down after the test's async
    # fixtures: a node started or stopped by a fixture is watched too.
    if tracemalloc.is_tracing():  # `python -X tracemalloc` hunts leaks; the limits mean nothing then
        yield
        return
    with LoopBlockDetector() as detector:
        yield
    if detector.blocks:
        pytest.fail(detector.report(), pytrace=False)
