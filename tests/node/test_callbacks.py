"""Callbacks first in, first out per destination: against real requesters on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from computenode.callbacks import CallbackSender, destination_of
from computenode.store import Store
from tests.node.conftest import CallbackServer, RunningNode
from tests.node.test_node import noop_job

Call = tuple[str, str]  # (callback name, the body's ExecutionID)


def fast(attempts: int) -> float:
    return 0.05  # the production backoff grows to a minute; the order does not depend on it


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@asynccontextmanager
async def running(sender: CallbackSender) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(sender.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def until(server: CallbackServer, check: Callable[[], bool], timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s), server.changed:
        while not check():
            await server.changed.wait()


async def emptied(store: Store, timeout_s: float = 10) -> None:
    """Wait until every callback is acknowledged and deleted (the requester counts it before)."""
    async with asyncio.timeout(timeout_s):
        while await store.count_callbacks():
            await asyncio.sleep(0.02)


def calls(seen: list[tuple[str, dict[str, Any]]]) -> list[Call]:
    return [(name, body["ExecutionID"]) for name, body in seen]


async def send(sender: CallbackSender, requester: str, *queued: Call) -> None:
    for name, eid in queued:
        await sender.send(requester, name, {"ExecutionID": eid})


# The callbacks of three executions, in the order they are stored.
ORDER: list[Call] = [
    ("on_run_complete", "e1"),
    ("on_run_complete", "e2"),
    ("on_run_complete", "e3"),
    ("on_publish_complete", "e1"),
    ("on_compute_failure", "e2"),
    ("on_publish_complete", "e3"),
]


async def test_a_requester_down_for_a_while_gets_every_callback_in_stored_order(
    store: Store, http: httpx.AsyncClient, callbacks: CallbackServer
) -> None:
    callbacks.fail = True
    sender = CallbackSender(store, http, backoff=fast)
    await send(sender, callbacks.url, *ORDER[:2])  # queued before the sender runs
    async with running(sender):
        await until(callbacks, lambda: len(callbacks.refused) >= 4)
        await send(sender, callbacks.url, *ORDER[2:])  # queued while the requester refuses
        await until(callbacks, lambda: len(callbacks.refused) >= 8)
        # Only the head was tried: the others wait behind it rather than being sent too.
        assert set(calls(callbacks.refused)) == {ORDER[0]}
        callbacks.fail = False
        await until(callbacks, lambda: len(callbacks.received) >= len(ORDER))
        await emptied(store)
    assert calls(callbacks.received) == ORDER


class HangingServer:
    """A requester that takes every POST and answers only once `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.arrived: list[Call] = []
        self.answered: list[Call] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        call = (request.match_info["name"], (await request.json())["ExecutionID"])
        self.arrived.append(call)
        await self.release.wait()
        self.answered.append(call)
        return web.json_response({})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/cb/{name}", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/cb"


@pytest.fixture
async def hanging() -> AsyncIterator[HangingServer]:
    server = HangingServer()
    await server.start()
    yield server
    server.release.set()
    assert server.runner is not None
    await server.runner.cleanup()


async def test_a_destination_that_does_not_answer_delays_no_other(
    store: Store, http: httpx.AsyncClient, callbacks: CallbackServer, hanging: HangingServer
) -> None:
    sender = CallbackSender(store, http, timeout_s=30, backoff=fast)
    async with running(sender):
        for i, (name, eid) in enumerate(ORDER):
            await send(sender, hanging.url if i % 2 == 0 else callbacks.url, (name, eid))
        # The other requester gets all of its callbacks while the first POST to `hanging` is open.
        await until(callbacks, lambda: len(callbacks.received) == 3)
        assert calls(callbacks.received) == ORDER[1::2]
        assert hanging.arrived == [ORDER[0]] and hanging.answered == []
        hanging.release.set()
        async with asyncio.timeout(10):
            while len(hanging.answered) < 3:
                await asyncio.sleep(0.02)
    assert hanging.arrived == hanging.answered == ORDER[0::2]


async def test_the_order_survives_a_restart(
    tmp_path: Path, http: httpx.AsyncClient, callbacks: CallbackServer
) -> None:
    path = tmp_path / "db.sqlite"
    callbacks.fail = True
    first = Store(path)
    await first.open()
    try:
        sender = CallbackSender(first, http, backoff=fast)
        async with running(sender):
            await send(sender, callbacks.url, *ORDER[:4])
            await until(callbacks, lambda: len(callbacks.refused) >= 3)
    finally:
        await first.close()
    # The head has been refused: it is due later than the callbacks behind it, yet goes first.
    again = Store(path)
    await again.open()
    try:
        sender = CallbackSender(again, http, backoff=fast)
        await send(sender, callbacks.url, *ORDER[4:])
        callbacks.fail = False
        async with running(sender):
            await until(callbacks, lambda: len(callbacks.received) >= len(ORDER))
            await emptied(again)
    finally:
        await again.close()
    assert set(calls(callbacks.refused)) == {ORDER[0]}
    assert calls(callbacks.received) == ORDER


async def test_deliver_due_stops_a_destination_at_its_first_refusal(
    store: Store, http: httpx.AsyncClient, callbacks: CallbackServer
) -> None:
    callbacks.fail = True
    sender = CallbackSender(store, http, backoff=fast)
    await send(sender, callbacks.url, *ORDER)
    await sender.deliver_due()
    assert calls(callbacks.refused) == [ORDER[0]]
    callbacks.fail = False
    await asyncio.sleep(0.06)  # the head's backoff
    await sender.deliver_due()
    assert calls(callbacks.received) == ORDER


async def test_a_requester_is_an_http_destination_and_nothing_else_is_one() -> None:
    dest = destination_of("http://127.0.0.1:9/cb/")
    assert (dest.transport, dest.address, str(dest)) == (
        "http",
        "http://127.0.0.1:9/cb",
        "http:http://127.0.0.1:9/cb",
    )
    with pytest.raises(ValueError, match="no callback transport"):
        destination_of("/ip4/127.0.0.1/tcp/1235/p2p/QmPeer")


async def test_callbacks_of_several_executions_reach_a_recovering_requester_in_order(
    make_node: Callable[..., Any], callbacks: CallbackServer
) -> None:
    rn: RunningNode = await make_node()
    callbacks.fail = True
    eids = []
    for _ in range(3):
        ask = {"Job": noop_job(), "ShardIndexes": [0], "CallbackURL": callbacks.url}
        [a] = (await rn.http.post("/api/v1/compute/ask_for_bid", json=ask)).json()["ShardResponse"]
        eids.append(a["ExecutionID"])
        assert (await rn.http.post("/api/v1/compute/bid_accepted", json={"ExecutionID": eids[-1]})).is_success
        await rn.wait_execution(eids[-1], {"WaitingVerification"})
    for eid in eids[:2]:
        assert (await rn.http.post("/api/v1/compute/result_accepted", json={"ExecutionID": eid})).is_success
        await rn.wait_execution(eid, {"Completed"})
    store = rn.node.store
    async with asyncio.timeout(10):
        while await store.count_callbacks() < 5:
            await asyncio.sleep(0.05)
    queued = [(c.name, json.loads(c.body)["ExecutionID"]) for c in await store.callbacks()]
    assert queued == [("on_run_complete", e) for e in eids] + [("on_publish_complete", e) for e in eids[:2]]
    metrics = (await rn.http.get("/metrics")).text
    assert re.search(r"^computenode_callbacks_pending 5\.0$", metrics, re.M), metrics
    await until(callbacks, lambda: len(callbacks.refused) >= 2, timeout_s=20)
    assert set(calls(callbacks.refused)) == {queued[0]}
    callbacks.fail = False
    await until(callbacks, lambda: len(callbacks.received) >= len(queued), timeout_s=20)
    assert calls(callbacks.received) == queued
    metrics = (await rn.http.get("/metrics")).text
    assert re.search(r"^computenode_callbacks_pending 0\.0$", metrics, re.M), metrics


async def test_a_store_that_fails_ends_the_loop_with_its_error(
    tmp_path: Path, http: httpx.AsyncClient, callbacks: CallbackServer
) -> None:
    """The supervisor (supervisor.py) restarts a loop that raises and reports it in /readyz."""
    callbacks.fail = True
    s = Store(tmp_path / "db.sqlite")
    await s.open()
    sender = CallbackSender(s, http, backoff=fast)
    await send(sender, callbacks.url, ORDER[0])
    task = asyncio.create_task(sender.run(asyncio.Event()))
    await until(callbacks, lambda: len(callbacks.refused) >= 1)
    await s.close()  # the queue task's next read fails
    # A closed store: the pool refuses work (RuntimeError) or the connection does (sqlite3).
    with pytest.raises((RuntimeError, sqlite3.ProgrammingError)):
        await asyncio.wait_for(task, 5)
