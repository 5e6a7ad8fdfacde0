"""Reads of lists and the dashboard share api.read_rate, so readers cannot take the loop from jobs;
probes, a job's own state and writes are never paced."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

import httpx

from computenode.api.pacing import MAX_WAIT_S, Pacer


def test_slots_are_spaced_and_a_wait_over_the_cap_takes_none() -> None:
    pacer = Pacer(rate=10.0)
    waits = [pacer.reserve() for _ in range(int(MAX_WAIT_S * 10) + 1)]
    assert waits[0] == 0.0
    assert all(0.099 < b - a < 0.101 for a, b in zip(waits, waits[1:], strict=False))
    assert pacer.reserve() == math.inf  # the next would wait over MAX_WAIT_S
    assert pacer.reserve() == math.inf  # and being refused took no slot
    assert waits[-1] <= MAX_WAIT_S


async def test_readers_share_the_rate_and_probes_and_jobs_are_not_paced(
    make_node: Callable[..., Any],
) -> None:
    rn = await make_node(api={"listen": "127.0.0.1:0", "read_rate": 5})
    http: httpx.AsyncClient = rn.http
    start = time.monotonic()
    answers = await asyncio.gather(*(http.get(path) for path in ["/", "/api/v1/executions", "/metrics"] * 2))
    took = time.monotonic() - start
    assert [a.status_code for a in answers] == [200] * 6
    assert took >= 5 * 0.2 - 0.05, took  # six reads at 5/s: the last waited about a second
    start = time.monotonic()
    for path in ["/healthz", "/readyz", "/livez", "/api/v1/node"] * 5:
        assert (await http.get(path)).status_code in (200, 503)
    assert time.monotonic() - start < 1.0  # twenty unpaced calls, not four seconds' worth
    # Over the cap: 429 with Retry-After, at once, instead of a queue without end.
    burst = await asyncio.gather(*(http.get("/api/v1/jobs") for _ in range(20)))
    refused = [r for r in burst if r.status_code == 429]
    assert refused and all(r.headers["Retry-After"] == "2" for r in refused)
    assert "api.read_rate" in refused[0].json()["error"]
