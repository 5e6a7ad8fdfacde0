"""Fixtures for the bidding tests: a real probe server on 127.0.0.1 and a Bidder factory."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from bidhelpers import Facts, Setup, limits

from computenode.bidding import Bidder
from computenode.capacity import NodeLimits
from computenode.config import JobSelectionConfig, TimeoutsConfig
from computenode.shards import ShardPlans

BidderFactory = Callable[..., Bidder]


@pytest.fixture
def setup() -> Setup:
    return Setup()


@pytest_asyncio.fixture
async def bidder(setup: Setup) -> AsyncIterator[BidderFactory]:
    """Build a Bidder: keyword arguments are JobSelectionConfig fields, plus `timeouts` and `limits`.

    Each one is closed at teardown: an HTTP probe opens the Bidder's own client.
    """
    built: list[Bidder] = []

    def build(
        timeouts: TimeoutsConfig | None = None, node_limits: NodeLimits | None = None, **policy: Any
    ) -> Bidder:
        b = Bidder(
            node_id="node-1",
            selection=JobSelectionConfig(**policy),
            timeouts=timeouts or TimeoutsConfig(),
            limits=node_limits or limits(),
            facts=Facts(setup),
            storage=setup.storage,
            plans=ShardPlans(setup.storage),
        )
        built.append(b)
        return b

    yield build
    for b in built:
        await b.aclose()


@dataclass
class ProbeServer:
    url: str
    received: list[dict[str, Any]]


@pytest_asyncio.fixture
async def probe_server() -> AsyncIterator[ProbeServer]:
    """A real aiohttp server on 127.0.0.1: /ok, /error, /no, /yes-json, /no-500, /hang, /garbage."""
    received: list[dict[str, Any]] = []

    async def record(request: web.Request) -> None:
        received.append(json.loads(await request.read()))

    async def ok(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(text="fine")

    async def error(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(status=500, text="boom")

    async def no(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response({"ShouldBid": False, "Reason": "this node only takes gold jobs"})

    async def yes_json(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response({"shouldBid": True, "reason": "welcome"})

    async def no_500(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response({"ShouldBid": False, "Reason": "quota exhausted"}, status=503)

    async def hang(request: web.Request) -> web.Response:
        await record(request)
        await asyncio.sleep(60)
        return web.Response(text="too late")

    async def garbage(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(text="{not json", content_type="application/json")

    app = web.Application()
    handlers: dict[str, Callable[[web.Request], Awaitable[web.Response]]] = {
        "/ok": ok, "/error": error, "/no": no, "/yes-json": yes_json, "/no-500": no_500,
        "/hang": hang, "/garbage": garbage,
    }  # fmt: skip
    app.add_routes([web.post(path, handler) for path, handler in handlers.items()])
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield ProbeServer(f"http://127.0.0.1:{port}", received)
    finally:
        await runner.cleanup()
