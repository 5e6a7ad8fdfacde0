"""A real node in the test's loop, on 127.0.0.1 with a free port, and a real callback server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from computenode.config import Settings
from computenode.node import Node


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# One node ID per test process: two test runs on one machine (a developer's and CI's, or parallel
# engineers') must not reap each other's containers, which their nodes find by this ID.
TEST_NODE_ID = f"n-test-{uuid.uuid4().hex[:8]}"


# A node on a libp2p network of its own: a real host on a free loopback port, no requester to dial.
ON_A_NETWORK = {
    "enabled": True,
    "listen": ["/ip4/127.0.0.1/tcp/0"],
    "peers": [],
    "accept_any_requester": True,
}


def node_settings(tmp_path: Path, ipfs_api: str, **extra: Any) -> Settings:
    base = {
        "node": {"id": TEST_NODE_ID, "labels": {"env": "test"}, "data_dir": str(tmp_path / "node")},
        "api": {"listen": "127.0.0.1:0"},
        "capacity": {"total": {"cpu": "2", "memory": "2Gi", "disk": "10Gi"}},
        "job_selection": {"locality": "anywhere"},
        "engines": {"docker": {"enabled": False}, "wasm": {"enabled": True}, "noop": {"enabled": True}},
        "storage": {"ipfs": {"api": ipfs_api}},
        "retention": {"min_free_disk": "1Mi"},
        "timeouts": {"drain_grace": "2s"},
    }
    return Settings(**deep_merge(base, extra))


class RunningNode:
    def __init__(self, node: Node, task: asyncio.Task[int], stop: asyncio.Event) -> None:
        self.node, self.task, self.stop_event = node, task, stop
        self.url = node.base_url
        self.http = httpx.AsyncClient(base_url=self.url, timeout=30)

    async def stop(self) -> int:
        self.stop_event.set()
        await self.http.aclose()
        return await asyncio.wait_for(self.task, 30)

    async def wait_job(self, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s):
            while True:
                body = (await self.http.get(f"/api/v1/jobs/{job_id}")).json()
                if body["State"] not in ("New", "InProgress"):
                    return body
                await self.node.compute.wait_changed(0.1)

    async def wait_execution(self, eid: str, states: set[str], timeout_s: float = 30) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s):
            while True:
                body = (await self.http.get(f"/api/v1/executions/{eid}")).json()
                if body["State"] in states:
                    return body
                await self.node.compute.wait_changed(0.1)


async def start_node(settings: Settings) -> RunningNode:
    node = Node(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(node.run(stop, handle_signals=False))
    async with asyncio.timeout(30):
        while not node.ready:
            if task.done():
                task.result()  # raises the start-up error
            await asyncio.sleep(0.02)
    return RunningNode(node, task, stop)


@pytest.fixture
async def make_node(tmp_path: Path, ipfs_api: str) -> AsyncIterator[Callable[..., Any]]:
    started: list[RunningNode] = []

    async def make(**extra: Any) -> RunningNode:
        rn = await start_node(node_settings(tmp_path, ipfs_api, **extra))
        started.append(rn)
        return rn

    yield make
    for rn in started:
        if not rn.task.done():
            await rn.stop()


class CallbackServer:
    """A requester's callback endpoint that records every POST; can answer 503 for a while.

    `received` holds the callbacks answered 200, `refused` those answered 503 (`fail` set).
    """

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.refused: list[tuple[str, dict[str, Any]]] = []
        self.fail = False
        self.changed = asyncio.Condition()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        call = (request.match_info["name"], await request.json())
        failing = self.fail
        (self.refused if failing else self.received).append(call)
        async with self.changed:
            self.changed.notify_all()
        return web.Response(status=503) if failing else web.json_response({})

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/cb/{name}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/cb"

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()

    async def wait_for(self, name: str, execution_id: str, timeout_s: float = 30) -> dict[str, Any]:
        """The first `name` callback of the execution answered 200."""
        return (await self._wait(self.received, name, execution_id, 1, timeout_s))[0]

    async def wait_refused(
        self, name: str, execution_id: str, count: int, timeout_s: float = 30
    ) -> list[dict[str, Any]]:
        """The first `count` deliveries of the execution's `name` callback answered 503."""
        return await self._wait(self.refused, name, execution_id, count, timeout_s)

    async def _wait(
        self,
        calls: list[tuple[str, dict[str, Any]]],
        name: str,
        execution_id: str,
        count: int,
        timeout_s: float,
    ) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout_s), self.changed:
            while True:
                found = [body for n, body in calls if n == name and body.get("ExecutionID") == execution_id]
                if len(found) >= count:
                    return found[:count]
                await self.changed.wait()


@pytest.fixture
async def callbacks() -> AsyncIterator[CallbackServer]:
    server = CallbackServer()
    await server.start()
    yield server
    await server.stop()
