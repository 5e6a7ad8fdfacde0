"""A stand-in requester peer for tests of the node's libp2p side: a py-libp2p host that dials the
worker, sends compute calls as the Go requester does (one JSON value, its side left open), and
records the callbacks the worker sends it."""

from __future__ import annotations

import asyncio
import json
from functools import partial
from pathlib import Path
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF, StreamReset

from computenode.network.bridge import TrioThread
from computenode.network.host import Libp2pHost, load_or_make_key, parse_peer
from computenode.network.wire import CALLBACKS, callback_protocol, compute_protocol, read_one_json


async def _no_compute(name: str, remote: str, request: Any) -> Any:
    raise AssertionError(f"the test peer got a compute call {name}")


class TestPeer:
    __test__ = False  # not a test class

    def __init__(self, key_path: Path, worker: str) -> None:
        self.worker = worker
        loop = asyncio.get_running_loop()
        self.node_infos: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        def gossiped(data: bytes) -> None:  # on the trio thread
            loop.call_soon_threadsafe(self.node_infos.put_nowait, json.loads(data))

        key = load_or_make_key(key_path)
        self.host = Libp2pHost(key, ["/ip4/127.0.0.1/tcp/0"], [worker], _no_compute, gossiped)
        self.peer_id = str(self.host.peer_id)
        self.bridge = TrioThread(loop)
        self.callbacks: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self.addr = ""

    async def start(self) -> None:
        await self.bridge.start(self.host.main)
        self.addr = (await self.bridge.call(self.host.addrs))[0] + f"/p2p/{self.peer_id}"
        await self.bridge.call(self._take_callbacks)

    async def stop(self) -> None:
        await self.bridge.stop()

    async def _take_callbacks(self) -> None:
        loop = self.bridge.loop

        async def handler(name: str, stream: Any) -> None:
            body = await read_one_json(partial(_read, stream))
            await stream.close()
            loop.call_soon_threadsafe(self.callbacks.put_nowait, (name, body))

        for name in CALLBACKS:
            self.host._host.set_stream_handler(TProtocol(callback_protocol(name)), partial(handler, name))

    async def connect(self) -> None:
        await self.bridge.call(self.host.dial, parse_peer(self.worker)[0])

    async def call(self, name: str, request: Any, raw: bytes | None = None) -> Any:
        """One compute call; the answer, or StreamReset when the worker reset the stream."""
        data = raw if raw is not None else json.dumps(request).encode()
        return await self.bridge.call(self._call, name, data)

    async def _call(self, name: str, data: bytes) -> Any:
        peer = parse_peer(self.worker)[0]
        stream = await self.host._host.new_stream(peer, [TProtocol(compute_protocol(name))])
        await stream.write(data)  # and keep the side open, as the Go requester does
        with trio.fail_after(30):
            chunks = b""
            while True:
                try:
                    chunk = await stream.read(65536)
                except StreamEOF:
                    break
                if not chunk:
                    break
                chunks += chunk
        await stream.close()
        if not chunks:  # py-libp2p may see the worker's reset as an end without an answer
            raise StreamReset(f"{name}: the stream ended without an answer")
        return json.loads(chunks)

    async def node_info(self, timeout_s: float = 30) -> dict[str, Any]:
        """The next NodeInfo gossiped on bacalhau-node-info."""
        return await asyncio.wait_for(self.node_infos.get(), timeout_s)

    async def callback(self, timeout_s: float = 30) -> tuple[str, dict[str, Any]]:
        return await asyncio.wait_for(self.callbacks.get(), timeout_s)


async def _read(stream: Any) -> bytes:
    try:
        data: bytes = await stream.read(65536)
        return data
    except StreamEOF:
        return b""


__all__ = ["StreamReset", "TestPeer"]
