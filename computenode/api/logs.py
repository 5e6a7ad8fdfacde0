"""Execution logs: stdout/stderr so far, or followed live until the execution ends.

A log file can be gigabytes: it is read in bounded chunks in a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from computenode.model import ExecutionState

if TYPE_CHECKING:
    from computenode.api.base import NodeView

CHUNK = 256 * 1024
POLL_S = 0.2


async def stream_logs(node: NodeView, request: web.Request) -> web.StreamResponse:
    eid = request.match_info["id"]
    ex = await node.execution(eid)
    stream = request.query.get("stream", "stdout")
    if stream not in ("stdout", "stderr"):
        stream = "stdout"
    follow = request.query.get("follow", "").lower() in ("1", "true", "yes")

    def path() -> Path:  # looked up per read: the file moves when the execution is published
        return node.log_path(eid, stream)

    resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await resp.prepare(request)
    offset = 0
    while True:
        offset = await _send_from(path, offset, resp)
        ex = await node.execution(eid)
        if not follow or ex.state.is_terminal or ex.state is ExecutionState.WAITING_VERIFICATION:
            if follow:
                offset = await _send_from(path, offset, resp)
            break
        await asyncio.sleep(POLL_S)
    if offset == 0 and ex.run_output is not None and not await asyncio.to_thread(lambda: path().exists()):
        # The results dir is gone (cleaned up): what the store kept of the output.
        text = ex.run_output.stdout if stream == "stdout" else ex.run_output.stderr
        await resp.write(text.encode())
    await resp.write_eof()
    return resp


async def _send_from(path: Callable[[], Path], offset: int, resp: web.StreamResponse) -> int:
    """Send path's bytes from offset to its current end; the new offset."""
    while chunk := await asyncio.to_thread(_read_chunk, path, offset):
        await resp.write(chunk)
        offset += len(chunk)
    return offset


def _read_chunk(path: Callable[[], Path], offset: int) -> bytes:
    try:
        with path().open("rb") as f:
            f.seek(offset)
            return f.read(CHUNK)
    except FileNotFoundError:
        return b""
