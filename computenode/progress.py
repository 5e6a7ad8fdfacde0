"""One execution's progress stages, as the runner, storage providers and executors report them.

The runner makes an ExecutionProgress per execution and sets it as the current one for the
task that prepares and runs it; storage providers (url.py, ipfs.py) and the Docker image pull
find it with `current()`, so the StorageProvider and Executor Protocols stay as they are and a
provider run outside an execution (tests, `explode`) reports to nothing. Every report goes to
the event bus's `progress` (computenode/events.py): in memory, rate-limited there, never stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

from computenode.events import ProgressSink, no_progress


class ExecutionProgress:
    """The current stage of one execution; each report carries StartedAt and Elapsed."""

    def __init__(
        self, sink: ProgressSink, execution_id: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.sink = sink
        self.execution_id = execution_id
        self.clock = clock
        self.stage_name = ""
        self.started = clock()
        self.started_at = time.time()
        self.transfer = Transfer(self)

    def stage(self, name: str, **detail: Any) -> None:
        """A new stage: its clock and byte counts start at zero."""
        self.stage_name = name
        self.started = self.clock()
        self.started_at = time.time()
        self.transfer = Transfer(self)
        self.update(**detail)

    def update(self, **detail: Any) -> None:
        """More detail of the current stage (the bus keeps at most 4 a second)."""
        elapsed = round(self.clock() - self.started, 3)
        self.sink(
            self.execution_id,
            self.stage_name,
            StartedAt=round(self.started_at, 3),
            Elapsed=elapsed,
            **detail,
        )


class Transfer:
    """Bytes of the current stage (every input of `fetching inputs`), summed over its streams."""

    def __init__(self, progress: ExecutionProgress | None) -> None:
        self.progress = progress
        self.bytes = 0
        self.total = 0  # bytes expected, from what the sources said (Content-Length, kubo's sizes)

    def expect(self, n: int) -> None:
        self.total += max(n, 0)

    def stream(self) -> Callable[[int], None]:
        """For one stream whose callback gets its running total (stream_to_file's on_batch)."""
        seen = 0

        def on_total(total: int) -> None:
            nonlocal seen
            self.add(total - seen)
            seen = total

        return on_total

    def add(self, n: int) -> None:
        self.bytes += n
        if self.progress is None:
            return
        elapsed = self.progress.clock() - self.progress.started
        detail: dict[str, Any] = {"Bytes": self.bytes}
        if self.total:
            detail["TotalBytes"] = self.total
        if elapsed > 0:
            detail["Rate"] = round(self.bytes / elapsed)  # bytes a second, since the stage began
        self.progress.update(**detail)


_current: ContextVar[ExecutionProgress | None] = ContextVar("execution_progress", default=None)
_NOWHERE = ExecutionProgress(no_progress, "")


def current() -> ExecutionProgress:
    """The progress of the execution this task works for; one that reports nothing outside one."""
    return _current.get() or _NOWHERE


def transfer() -> Transfer:
    """The byte counts of the current execution's stage (a throwaway one outside an execution)."""
    progress = _current.get()
    return progress.transfer if progress is not None else Transfer(None)


def set_current(progress: ExecutionProgress | None) -> Token[ExecutionProgress | None]:
    """Make `progress` the current one for this task (and tasks it starts); a token for reset."""
    return _current.set(progress)


def reset_current(token: Token[ExecutionProgress | None]) -> None:
    _current.reset(token)
