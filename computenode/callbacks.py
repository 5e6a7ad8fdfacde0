"""Callbacks to a requester, persisted first and retried with backoff until a 2xx answer.

Bacalhau v0.3.23 fired them once and forgot them; a requester that was briefly
down never learnt a result. Here each one is a row in the store until acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx

from computenode.store import Store

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0


def backoff_s(attempts: int) -> float:
    return min(MAX_BACKOFF_S, 0.25 * 2**attempts)


class CallbackSender:
    def __init__(self, store: Store, http: httpx.AsyncClient, timeout_s: float = 10.0) -> None:
        self.store = store
        self.http = http
        self.timeout_s = timeout_s
        self._wake = asyncio.Event()

    async def send(self, base_url: str, name: str, body: dict[str, Any]) -> None:
        """Queue `body` for POST to base_url + "/" + name; returns once it is stored."""
        if not base_url:
            return
        url = base_url.rstrip("/") + "/" + name
        await self.store.add_callback(url, json.dumps(body))
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver due callbacks until `stop` is set."""
        while not stop.is_set():
            self._wake.clear()
            await self.deliver_due()
            nxt = await self.store.next_callback_at()
            delay = 3600.0 if nxt is None else max(0.0, nxt - time.time())
            waiters = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
            try:
                await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()

    async def deliver_due(self) -> None:
        due = await self.store.due_callbacks(time.time())
        if due:
            await asyncio.gather(*(self._deliver(c.id, c.url, c.body, c.attempts) for c in due))

    async def _deliver(self, callback_id: int, url: str, body: str, attempts: int) -> None:
        try:
            resp = await self.http.post(
                url, content=body, headers={"Content-Type": "application/json"}, timeout=self.timeout_s
            )
            ok, why = resp.is_success, f"HTTP {resp.status_code}"
        except httpx.HTTPError as exc:
            ok, why = False, f"{type(exc).__name__}: {exc}"
        if ok:
            await self.store.callback_done(callback_id)
            return
        wait = backoff_s(attempts)
        log.warning("callback not delivered, retrying", extra={"url": url, "reason": why, "retry_in_s": wait})
        await self.store.callback_retry(callback_id, time.time() + wait)
