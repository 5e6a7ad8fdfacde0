"""Admission and scheduling: reservations for bids, a capacity-aware FIFO queue, running set.

One rule admits work, at bid time and when a bid is accepted: an execution fits
when everything committed (reserved bids, queued and running executions) plus
its usage stays within total + queue capacity. A bid reserves its usage until it
is accepted, rejected or expires, so an accepted bid never fails for capacity.
Queued executions start, in order, as soon as they fit in the total; one that
does not fit yet does not hold back a smaller one behind it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from computenode.model import ResourceUsageData

StartFn = Callable[[str, tuple[int, ...]], None]


@dataclass(slots=True)
class _Entry:
    usage: ResourceUsageData
    expires_at: float = 0.0


class Scheduler:
    def __init__(
        self, total: ResourceUsageData, queue: ResourceUsageData, gpus: list[int], start: StartFn
    ) -> None:
        self.total = total
        self.queue_capacity = queue
        self._free_gpus = list(gpus)
        self._start = start
        self.reserved: dict[str, _Entry] = {}
        self.queued: dict[str, _Entry] = {}  # insertion order is FIFO order
        self.running: dict[str, tuple[_Entry, tuple[int, ...]]] = {}
        # Running totals, kept as entries come and go: a decision costs O(1), not O(executions).
        self._running_total = ResourceUsageData()
        self._pending_total = ResourceUsageData()

    def __repr__(self) -> str:
        return (
            f"<Scheduler reserved={len(self.reserved)} queued={len(self.queued)} running={len(self.running)}>"
        )

    # -- accounting --------------------------------------------------------------------------
    @property
    def running_usage(self) -> ResourceUsageData:
        return self._running_total

    @property
    def pending_usage(self) -> ResourceUsageData:
        """Reserved and queued: committed but not running."""
        return self._pending_total

    def _pend(self, usage: ResourceUsageData, sign: int) -> None:
        self._pending_total = _settled(self._pending_total, usage, sign, not (self.reserved or self.queued))

    def _run(self, usage: ResourceUsageData, sign: int) -> None:
        self._running_total = _settled(self._running_total, usage, sign, not self.running)

    @property
    def available(self) -> ResourceUsageData:
        return self.total.sub(self.running_usage)

    def admit_reasons(self, usage: ResourceUsageData) -> list[str]:
        """Why `usage` cannot be taken on now (empty: it can), naming requested and allowed amounts."""
        if not usage.less_than_eq(self.total):
            return [f"over node capacity: {r}" for r in usage.exceeding(self.total)]
        return self.room_reasons(usage)

    def room_reasons(self, usage: ResourceUsageData) -> list[str]:
        """Why `usage` does not fit in what is free now plus the queue (a whole job: every copy)."""
        room = self.total.add(self.queue_capacity).sub(self.running_usage.add(self.pending_usage))
        if not usage.less_than_eq(room):
            return [f"queue full: {r}" for r in usage.exceeding(room)]
        return []

    # -- lifecycle ---------------------------------------------------------------------------
    def reserve(self, execution_id: str, usage: ResourceUsageData, ttl_s: float) -> list[str]:
        reasons = self.admit_reasons(usage)
        if not reasons:
            self.reserved[execution_id] = _Entry(usage, time.monotonic() + ttl_s)
            self._pend(usage, +1)
        return reasons

    def enqueue(self, execution_id: str, usage: ResourceUsageData | None = None) -> None:
        """An accepted bid (or a restarted execution) joins the queue; starts it if it fits."""
        entry = self.reserved.pop(execution_id, None)
        self.queued[execution_id] = entry or _Entry(usage or ResourceUsageData())
        if entry is None:  # not reserved before (a restart, an owned job's overflow): newly committed
            self._pend(self.queued[execution_id].usage, +1)
        self.pump()

    def release(self, execution_id: str) -> None:
        """Forget an execution wherever it is (rejected, expired, finished, cancelled)."""
        for waiting in (self.reserved, self.queued):
            entry = waiting.pop(execution_id, None)
            if entry is not None:
                self._pend(entry.usage, -1)
        item = self.running.pop(execution_id, None)
        if item is not None:
            self._run(item[0].usage, -1)
            self._free_gpus.extend(item[1])
            self._free_gpus.sort()
            self.pump()

    def expired(self) -> list[str]:
        now = time.monotonic()
        return [eid for eid, e in self.reserved.items() if e.expires_at <= now]

    def pump(self) -> None:
        """Start every queued execution that fits, in queue order."""
        for eid, entry in list(self.queued.items()):
            fits = entry.usage.add(self.running_usage).less_than_eq(self.total)
            if fits and entry.usage.gpu <= len(self._free_gpus):
                gpus = tuple(self._free_gpus[: entry.usage.gpu])
                del self._free_gpus[: entry.usage.gpu]
                del self.queued[eid]
                self._pend(entry.usage, -1)
                self.running[eid] = (entry, gpus)
                self._run(entry.usage, +1)
                self._start(eid, gpus)

    def resize(self, total: ResourceUsageData, queue: ResourceUsageData) -> None:
        """New limits from a reload; what runs keeps running."""
        self.total, self.queue_capacity = total, queue
        self.pump()


def _settled(total: ResourceUsageData, usage: ResourceUsageData, sign: int, empty: bool) -> ResourceUsageData:
    """total + sign * usage; exactly zero once nothing is left, so float CPU never drifts."""
    if empty:
        return ResourceUsageData()
    return total.add(usage) if sign > 0 else total.sub(usage)
