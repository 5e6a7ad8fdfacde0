"""`computenode run` in this interpreter with every event-loop callback timed: one that holds
the loop longer than $STALL_MS (default 20) is appended to $STALL_LOG as a JSON line (its wall
and CPU time and its task: the supervisor's loops are `loop-<name>`); garbage collections over
that long too, as `gc-<generation>` (their wall time).

    python bench/_stall_node.py [anything] run --config FILE   (what precedes `run` is ignored)

The timing wraps asyncio.events.Handle._run, through which the loop runs every callback and
task step; it costs two clock reads per callback.
"""

from __future__ import annotations

import asyncio.events
import gc
import json
import os
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.getcwd())  # the checkout the node runs from (bench/_node.py sets the cwd)

from computenode.cli import main  # noqa: E402

_LIMIT_S = float(os.environ.get("STALL_MS", "20")) / 1e3
_OUT = os.environ.get("STALL_LOG", "")
_run = asyncio.events.Handle._run


def _task_of(handle: asyncio.events.Handle) -> str:
    """The task a task step or wake-up belongs to (its name and coroutine), else the handle."""
    task = getattr(handle._callback, "__self__", None)
    if isinstance(task, asyncio.Task):
        return f"{task.get_name()} {task.get_coro().__qualname__}"  # type: ignore[union-attr]
    return repr(handle)[:200]


def _timed(self: asyncio.events.Handle) -> Any:
    start, cpu = time.perf_counter(), time.thread_time()
    try:
        return _run(self)
    finally:
        took = time.perf_counter() - start
        if took > _LIMIT_S and _OUT:
            # Wall time counts the loop thread descheduled or waiting for the GIL too; its own
            # CPU time beside it tells the loop's work from the machine's contention.
            row = {"at": time.time(), "ms": took * 1e3, "cpu_ms": (time.thread_time() - cpu) * 1e3,
                   "task": _task_of(self)}  # fmt: skip
            with open(_OUT, "a") as f:
                f.write(json.dumps(row) + "\n")


_gc_start = [0.0]


def _gc(phase: str, info: dict[str, int]) -> None:
    """Collections over the limit too (they stop whichever thread triggered them, the loop's
    callbacks included), as task `gc-<generation>`."""
    if phase == "start":
        _gc_start[0] = time.perf_counter()
        return
    took = time.perf_counter() - _gc_start[0]
    if took > _LIMIT_S and _OUT:
        row = {"at": time.time(), "ms": took * 1e3, "cpu_ms": took * 1e3, "task": f"gc-{info['generation']}",
               "collected": info["collected"]}  # fmt: skip
        with open(_OUT, "a") as f:
            f.write(json.dumps(row) + "\n")


def _freeze_after(seconds: float) -> None:
    """An experiment ($STALL_FREEZE_AFTER_S): gc.freeze() once the node has started, so later
    full collections do not scan what start-up made."""
    time.sleep(seconds)
    gc.freeze()


def run() -> int:
    sys.argv = ["computenode", *sys.argv[sys.argv.index("run") :]]
    asyncio.events.Handle._run = _timed  # type: ignore[method-assign]
    gc.callbacks.append(_gc)
    if freeze := os.environ.get("STALL_FREEZE_AFTER_S"):
        threading.Thread(target=_freeze_after, args=(float(freeze),), daemon=True).start()
    return main()


if __name__ == "__main__":
    sys.exit(run())
