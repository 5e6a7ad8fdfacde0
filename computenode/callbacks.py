"""Callbacks to a requester, persisted first and delivered in order, retried until acknowledged.

Bacalhau v0.3.23 fired them once and forgot them; a requester that was briefly
down never learnt a result. Here each one is a row in the store until acknowledged.

Each callback has a destination (store.Destination: a transport and an address). A
destination's callbacks are delivered first in, first out, across executions: only its
oldest undelivered one is in flight, and the next waits until that one is acknowledged.
Destinations do not wait for each other: each queue has its own task. The backoff is the
destination's (its head's attempts), so a requester down for minutes gets its whole queue,
in order, once it answers again; the queue is in the store, so a restart keeps it too.

Transports are looked up by name in CallbackSender.transports: "http" (POST to the
CallbackURL + "/" + name), and "p2p" (a stream to a requester peer, registered by
computenode/network/ when the node joins a Bacalhau network; the execution's requester is then
`p2p://<peer id>`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import httpx

from computenode.metrics import Metrics
from computenode.store import Callback, Destination, Store

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0
HTTP = "http"
P2P = "p2p"  # a libp2p peer: the Bacalhau network (computenode/network/), address = its peer ID


def backoff_s(attempts: int) -> float:
    return min(MAX_BACKOFF_S, 0.25 * 2**attempts)


class Transport(Protocol):
    async def deliver(self, address: str, name: str, body: str) -> str | None:
        """None once `address` acknowledged callback `name`, else why not (it is tried again)."""
        ...


class HttpTransport:
    """POST the body to address + "/" + name; any 2xx answer acknowledges it."""

    def __init__(self, http: httpx.AsyncClient, timeout_s: float) -> None:
        self.http = http
        self.timeout_s = timeout_s

    async def deliver(self, address: str, name: str, body: str) -> str | None:
        try:
            resp = await self.http.post(
                f"{address}/{name}",
                content=body,
                headers={"Content-Type": "application/json"},
                timeout=self.timeout_s,
            )
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        return None if resp.is_success else f"HTTP {resp.status_code}"


def destination_of(requester: str) -> Destination:
    """The destination of a requester as an execution records it (Execution.callback_url)."""
    if requester.startswith(("http://", "https://")):
        return Destination(HTTP, requester.rstrip("/"))
    if requester.startswith(P2P + "://"):
        return Destination(P2P, requester.removeprefix(P2P + "://"))
    raise ValueError(f"no callback transport for requester {requester!r}")


class CallbackSender:
    def __init__(
        self,
        store: Store,
        http: httpx.AsyncClient,
        timeout_s: float = 10.0,
        backoff: Callable[[int], float] = backoff_s,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics or Metrics()
        self.backoff = backoff
        self.transports: dict[str, Transport] = {HTTP: HttpTransport(http, timeout_s)}
        self._wake = asyncio.Event()
        self._busy: dict[Destination, asyncio.Task[None]] = {}  # one queue task per destination
        self._failed: BaseException | None = None

    async def send(self, requester: str, name: str, body: dict[str, Any]) -> None:
        """Queue callback `name` with `body` for `requester` (empty: nobody, an owned job);
        returns once it is stored."""
        if not requester:
            return
        await self.store.add_callback(destination_of(requester), name, json.dumps(body))
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver every destination's queue until `stop` is set.

        A queue task that fails (the store is down) ends this loop with its error, so the
        supervisor restarts it with backoff and /readyz reports it.
        """
        try:
            while not stop.is_set():
                self._wake.clear()
                if self._failed is not None:
                    failed, self._failed = self._failed, None
                    raise failed
                for head in await self.store.callback_heads():
                    if head.destination not in self._busy:
                        self._start(head.destination, stop)
                # Woken by send() and by every queue task that ends, so a callback stored while
                # its destination's task was finding the queue empty is not left behind.
                await _first(self._wake, stop)
        finally:
            tasks = list(self._busy.values())
            for task in tasks:
                task.cancel()  # a delivery cut short stays queued and is sent again
            await asyncio.gather(*tasks, return_exceptions=True)

    async def deliver_due(self) -> None:
        """Deliver what is due now, each destination's queue in order until it refuses one
        (the node's last round at stop, after run() ended)."""
        heads = await self.store.callback_heads(due_by=time.time())
        await asyncio.gather(
            *(self._drain(h.destination, None) for h in heads if h.destination not in self._busy)
        )

    def _start(self, destination: Destination, stop: asyncio.Event) -> None:
        task = asyncio.create_task(self._drain(destination, stop), name=f"callbacks-{destination}")
        self._busy[destination] = task

        def ended(t: asyncio.Task[None]) -> None:
            if self._busy.get(destination) is t:
                del self._busy[destination]
            if not t.cancelled() and t.exception() is not None:
                self._failed = t.exception()
            self._wake.set()

        task.add_done_callback(ended)

    async def _drain(self, destination: Destination, stop: asyncio.Event | None) -> None:
        """Deliver `destination`'s queue head first until it is empty; with `stop` None, return
        at the first head that is not due (deliver_due), else wait out its backoff."""
        while stop is None or not stop.is_set():
            head = await self.store.callback_head(destination)
            if head is None:
                return
            wait = head.next_at - time.time()
            if wait > 0:
                if stop is None:
                    return
                await _first(stop, timeout_s=wait)
                continue
            if not await self._deliver(head) and stop is None:
                return

    async def _deliver(self, cb: Callback) -> bool:
        transport = self.transports.get(cb.destination.transport)
        if transport is None:  # a row from a node with a transport this one lacks: kept for it
            why: str | None = f"no sender for transport {cb.destination.transport!r}"
        else:
            why = await transport.deliver(cb.destination.address, cb.name, cb.body)
        self.metrics.callbacks.labels(cb.destination.transport, "retried" if why else "delivered").inc()
        if why is None:
            await self.store.callback_done(cb.id)
            return True
        wait = self.backoff(cb.attempts)
        log.warning(
            "callback not delivered, retrying",
            extra={
                "destination": str(cb.destination),
                "callback": cb.name,
                "reason": why,
                "attempts": cb.attempts + 1,
                "retry_in_s": wait,
            },
        )
        await self.store.callback_retry(cb.id, time.time() + wait)
        return False


async def _first(*events: asyncio.Event, timeout_s: float | None = None) -> None:
    """Wait until one of `events` is set, or `timeout_s` passed."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
