"""Reads of lists and the dashboard are paced, so readers cannot take the loop from the jobs.

The node has one event loop for every request and every job step: three clients reading the
dashboard back-to-back made a WASM job ~3.7x slower (docs/performance.md, "Reads while a job
runs"), however cheap each read was. The reads named in PACED share `api.read_rate` per
second: a read beyond it waits for its slot, and one that would wait longer than MAX_WAIT_S is
answered 429 with Retry-After. A dashboard reloading every 5 s, a `list` now and then, a
Prometheus scrape never wait. Probes (/healthz, /readyz, /livez), a job's own state, its long
poll, logs, events and every write are never paced.
"""

from __future__ import annotations

import asyncio
import math
import time

from aiohttp import web
from aiohttp.typedefs import Middleware

from computenode.api.http import Handler, error_response

PACED = frozenset(
    {
        ("GET", "/"),
        ("GET", "/metrics"),
        ("GET", "/api/v1/jobs"),
        ("GET", "/api/v1/executions"),
        ("POST", "/requester/list"),
    }
)
MAX_WAIT_S = 2.0


class Pacer:
    """Slots `1 / rate` seconds apart, handed out in order of arrival."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next = 0.0

    def reserve(self) -> float:
        """Seconds to wait for the next slot, which is taken; inf when over MAX_WAIT_S (none taken)."""
        now = time.monotonic()
        slot = max(now, self.next)
        if slot - now > MAX_WAIT_S:
            return math.inf
        self.next = slot + self.interval
        return slot - now


def pacing_middleware(pacer: Pacer) -> Middleware:
    @web.middleware
    async def pace(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (request.method, request.path) in PACED:
            wait = pacer.reserve()
            if wait == math.inf:
                resp = error_response(429, "too many reads of lists and the dashboard (api.read_rate)")
                resp.headers["Retry-After"] = str(math.ceil(MAX_WAIT_S))
                return resp
            if wait > 0:
                await asyncio.sleep(wait)
        return await handler(request)

    return pace
