"""Execution logs: stdout/stderr so far, or followed live until the execution ends."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from computenode.node import Node

CHUNK = 64 * 1024
POLL_S = 0.2


async def stream_logs(node: Node, request: web.Request) -> web.StreamResponse:
    eid = request.match_info["id"]
    ex = await node.store.get(eid)
    stream = request.query.get("stream", "stdout")
    if stream not in ("stdout", "stderr"):
        stream = "stdout"
    follow = request.query.get("follow", "").lower() in ("1", "true", "yes")
    path = node.compute.runner.results_dir(eid) / stream
    resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await resp.prepare(request)
    offset = 0
    while True:
        offset = await _send_from(path, offset, resp)
        ex = await node.store.get(eid)
        if not follow or ex.state.is_terminal or ex.state.value in ("WaitingVerification",):
            if follow:
                await _send_from(path, offset, resp)
            break
        await asyncio.sleep(POLL_S)
    if offset == 0 and ex.run_output is not None and not path.exists():
        text = ex.run_output.stdout if stream == "stdout" else ex.run_output.stderr
        await resp.write(text.encode())
    await resp.write_eof()
    return resp


async def _send_from(path: object, offset: int, resp: web.StreamResponse) -> int:
    try:
        with open(path, "rb") as f:  # type: ignore[call-overload]
            f.seek(offset)
            while chunk := f.read(CHUNK):
                await resp.write(chunk)
                offset += len(chunk)
    except FileNotFoundError:
        pass
    return offset
