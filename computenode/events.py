"""The node's event bus: execution transitions, job state changes and execution progress, numbered.

Publishing is synchronous and never waits: each event goes into a bounded ring (for resuming
with Last-Event-ID) and into the pending queue of each matching subscriber. A subscriber that
falls `max_pending` events behind is dropped (it gets a `dropped` event and should resume with
Last-Event-ID) rather than slowing the node. docs/events.md has the wire format.

Event IDs: the first ID of a node process is the wall clock in microseconds at its start, then
+1 per event. IDs are therefore monotonic within a process and, across a restart, start above
every ID the previous process issued unless it averaged more than one event per microsecond or
the clock went back by more than its uptime; a Last-Event-ID from before a restart is older than
the ring and gets a `lost` event. This needs no write per event (issue 13: node overhead).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, Protocol

JOB, EXECUTION, PROGRESS = "job", "execution", "progress"
LOST, DROPPED = "lost", "dropped"  # control events: sent without an ID, so a client's resume point holds
RING_SIZE = 10_000
MAX_PENDING = 1_000
PROGRESS_INTERVAL_S = 0.25  # at most 4 progress events per second per execution within one stage
JOB_STATES_KEPT = 10_000  # jobs whose last published state is remembered (to publish changes only)
TERMINAL_JOB_STATES = frozenset({"Completed", "PartialError", "Error", "Cancelled"})


class ProgressSink(Protocol):
    """Where the runner reports stages: EventBus.progress, or nothing."""

    def __call__(self, execution_id: str, stage: str, **detail: Any) -> None: ...


def no_progress(execution_id: str, stage: str, **detail: Any) -> None:
    """A ProgressSink that drops everything (a Runner built without a bus, in tests)."""


class Event:
    """One event; its SSE encoding is made once, on first use, and shared by every subscriber."""

    __slots__ = ("id", "kind", "job_id", "data", "_wire")

    def __init__(self, id: int | None, kind: str, job_id: str, data: dict[str, Any]) -> None:
        self.id = id
        self.kind = kind
        self.job_id = job_id
        self.data = data
        self._wire: bytes | None = None

    def __repr__(self) -> str:
        return f"<Event {self.id} {self.kind} {self.data}>"

    def sse(self) -> bytes:
        if self._wire is None:
            head = f"event: {self.kind}\n" + (f"id: {self.id}\n" if self.id is not None else "")
            self._wire = (head + f"data: {json.dumps(self.data, separators=(',', ':'))}\n\n").encode()
        return self._wire


class Subscription:
    """Events for one reader, in order: `get()` them; use as a context manager to unsubscribe."""

    def __init__(self, bus: EventBus, job_id: str | None, max_pending: int) -> None:
        self.bus = bus
        self.job_id = job_id
        self.max_pending = max_pending
        self.pending: deque[Event] = deque()
        self.ended = False  # dropped for being slow, or the bus closed: nothing more will come
        self._wake = asyncio.Event()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bus._unsubscribe(self)

    def _push(self, event: Event) -> None:
        if len(self.pending) >= self.max_pending:
            self.pending.clear()
            self._end(Event(None, DROPPED, "", {"Reason": "subscriber too slow", **self.bus._resume_hint()}))
            return
        self.pending.append(event)
        self._wake.set()

    def _end(self, final: Event | None) -> None:
        if final is not None:
            self.pending.append(final)
        self.ended = True
        self._wake.set()
        self.bus._unsubscribe(self)

    async def get(self, timeout_s: float) -> Event | None:
        """The next event; None when `timeout_s` passes first or the subscription has ended."""
        if not self.pending and not self.ended:
            self._wake.clear()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._wake.wait()
            except TimeoutError:
                return None
        return self.pending.popleft() if self.pending else None


class EventBus:
    def __init__(
        self,
        first_id: int | None = None,
        ring_size: int = RING_SIZE,
        max_pending: int = MAX_PENDING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.first_id = first_id if first_id is not None else time.time_ns() // 1000
        self._next = self.first_id
        self._ring: deque[Event] = deque(maxlen=ring_size)
        self._max_pending = max_pending
        self._clock = clock
        self._everything: set[Subscription] = set()
        self._by_job: dict[str, set[Subscription]] = {}
        self._job_states: OrderedDict[str, str] = OrderedDict()
        # Executions not yet terminal: their job and shard (progress events name them), the last
        # progress stage and when it was published.
        self._running: dict[str, tuple[str, int, str, float]] = {}
        self._progress: dict[str, dict[str, Any]] = {}
        self.closed = False

    def __repr__(self) -> str:
        subs = len(self._everything) + sum(len(s) for s in self._by_job.values())
        return (
            f"<EventBus last={self.last_id} ring={len(self._ring)} subscribers={subs} closed={self.closed}>"
        )

    @property
    def last_id(self) -> int:
        return self._next - 1

    # -- publishing --------------------------------------------------------------------------------
    def publish(self, kind: str, job_id: str, data: dict[str, Any]) -> Event:
        event = Event(self._next, kind, job_id, data)
        self._next += 1
        self._ring.append(event)
        for sub in list(self._everything):
            sub._push(event)
        for sub in list(self._by_job.get(job_id, ())):
            sub._push(event)
        return event

    def execution(self, execution_id: str, job_id: str, shard_index: int, state: str, comment: str) -> None:
        """An execution's transition, as the store recorded it."""
        data = {
            "ExecutionID": execution_id,
            "JobID": job_id,
            "ShardIndex": shard_index,
            "State": state,
            "Comment": comment,
        }
        self.publish(EXECUTION, job_id, data)
        if state in ("Completed", "Failed", "Cancelled"):
            self._running.pop(execution_id, None)
            self._progress.pop(execution_id, None)
        elif execution_id not in self._running:
            self._running[execution_id] = (job_id, shard_index, "", 0.0)

    def job(self, job_id: str, state: str) -> None:
        """The job's state, published only when it differs from the last one published."""
        if self._job_states.get(job_id) == state:
            return
        self._job_states[job_id] = state
        self._job_states.move_to_end(job_id)
        if len(self._job_states) > JOB_STATES_KEPT:
            self._job_states.popitem(last=False)
        self.publish(JOB, job_id, {"JobID": job_id, "State": state})

    def progress(self, execution_id: str, stage: str, **detail: Any) -> None:
        """A sub-status of a running execution (a stage, with bytes and rate where known). Never
        stored; a new stage is always published, updates within one stage at most 4 per second.
        `latest_progress` keeps every update, published or not."""
        job_id, shard_index, last_stage, last_at = self._running.get(execution_id, ("", 0, "", 0.0))
        now = self._clock()
        data = {
            "ExecutionID": execution_id,
            "JobID": job_id,
            "ShardIndex": shard_index,
            "Stage": stage,
            **detail,
        }
        throttled = stage == last_stage and now - last_at < PROGRESS_INTERVAL_S
        if execution_id in self._running:
            self._progress[execution_id] = data
            if throttled:
                return
            self._running[execution_id] = (job_id, shard_index, stage, now)
        elif throttled:
            return
        self.publish(PROGRESS, job_id, data)

    def latest_progress(self, execution_id: str) -> dict[str, Any] | None:
        """The last progress of an execution that has not ended."""
        return self._progress.get(execution_id)

    # -- reading -----------------------------------------------------------------------------------
    def subscribe(self, job_id: str | None = None, after: int | None = None) -> Subscription:
        """Events from now on (of one job if `job_id`); with `after` (a Last-Event-ID), first the
        held events after it, or a `lost` event and every held event when some are gone."""
        sub = Subscription(self, job_id, self._max_pending)
        if self.closed:
            sub._end(None)
            return sub
        if after is not None:
            oldest = self._ring[0].id if self._ring else self._next
            assert oldest is not None
            if not oldest - 1 <= after <= self.last_id:
                hint = {"LastEventID": after, "OldestEventID": oldest}
                sub.pending.append(Event(None, LOST, "", {"Reason": "events after it are gone", **hint}))
                after = oldest - 1
            for event in self._ring:
                if event.id is not None and event.id > after and (job_id is None or event.job_id == job_id):
                    sub.pending.append(event)
        if job_id is None:
            self._everything.add(sub)
        else:
            self._by_job.setdefault(job_id, set()).add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        if sub.job_id is None:
            self._everything.discard(sub)
            return
        subs = self._by_job.get(sub.job_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_job[sub.job_id]

    def _resume_hint(self) -> dict[str, Any]:
        """What a dropped subscriber may still resume from (the ring's oldest event)."""
        return {"OldestEventID": self._ring[0].id if self._ring else self._next}

    def close(self) -> None:
        """The node is stopping: every subscription ends (streams close, long polls answer)."""
        self.closed = True
        for sub in [*self._everything, *(s for subs in self._by_job.values() for s in subs)]:
            sub._end(None)
