"""Background loops are supervised: one that raises is logged, restarted with backoff and shown
in /readyz, and the others go on."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from computenode import supervisor
from computenode.supervisor import Supervisor, backoff_s


def test_backoff_doubles_up_to_a_minute() -> None:
    assert [backoff_s(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff_s(50) == supervisor.MAX_BACKOFF_S


async def test_a_failing_loop_is_restarted_reported_and_heals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "FIRST_BACKOFF_S", 0.01)
    stop = asyncio.Event()
    loops = Supervisor(stop)
    calls = {"bad": 0, "good": 0}

    async def bad() -> None:
        calls["bad"] += 1
        if calls["bad"] <= 2:
            raise RuntimeError("store is gone")

    async def good() -> None:
        calls["good"] += 1

    loops.every("bad", 0.01, bad)
    loops.every("good", 0.01, good)
    async with asyncio.timeout(5):
        while calls["bad"] < 2:
            await asyncio.sleep(0.005)
        reason = await loops.check()
        assert (
            reason is not None and reason.startswith("bad failed") and "RuntimeError: store is gone" in reason
        )
        while calls["bad"] < 4:  # restarted after the backoff, then a clean round clears the report
            await asyncio.sleep(0.005)
    assert await loops.check() is None
    assert calls["good"] > 2  # the failing loop stopped nothing else
    stop.set()
    await loops.wait()


async def test_a_loop_that_ignores_stop_is_cancelled_by_aclose() -> None:
    stop = asyncio.Event()
    loops = Supervisor(stop)
    started = asyncio.Event()

    async def stubborn(_: asyncio.Event) -> None:
        started.set()
        await asyncio.Event().wait()

    loops.start("stubborn", stubborn)
    await started.wait()
    await loops.aclose()
    assert repr(loops) == "<Supervisor loops=[] failing=[]>"


async def test_node_shows_a_failing_loop_in_readyz(make_node: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store error injected into one loop (cleanup) is degraded readiness, not a dead node."""
    monkeypatch.setattr(supervisor, "FIRST_BACKOFF_S", 0.05)
    from computenode import node as node_module

    async def broken_clean(*args: Any, **kwargs: Any) -> int:
        raise OSError("database disk image is malformed")

    monkeypatch.setattr(node_module, "clean", broken_clean)
    rn = await make_node()
    await rn.node.health.refresh()
    async with asyncio.timeout(10):
        while True:
            body = (await rn.http.get("/readyz")).json()
            if not body["checks"].get("loops", {}).get("ok", True):
                break
            await asyncio.sleep(0.05)
            await rn.node.health.refresh()
    assert "cleanup failed" in body["checks"]["loops"]["reason"]
    assert "database disk image is malformed" in body["checks"]["loops"]["reason"]
    assert body["status"] == "degraded"
    # Other loops and the API go on: a job still runs to completion.
    job = {"Spec": {"Engine": "Noop"}}
    created = await rn.http.post("/api/v1/jobs", json=job)
    assert created.status_code == 201
    assert (await rn.wait_job(created.json()["JobID"]))["State"] == "Completed"
