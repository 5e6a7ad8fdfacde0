"""`GET /api/v1/events`: the event bus as Server-Sent Events, and the long poll of
`GET /api/v1/jobs/{id}?wait=`: both wait on the bus, never on a timer (docs/events.md)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiohttp import web

from computenode.config import parse_duration
from computenode.errors import SpecError
from computenode.events import JOB, TERMINAL_JOB_STATES, Subscription

if TYPE_CHECKING:
    from computenode.api.base import NodeView

log = logging.getLogger(__name__)

KEEPALIVE_S = 15.0  # a comment line this often: proxies and clients see the stream is alive
BATCH = 256  # events written per write, then the loop runs others (a replay can be 10,000)
MAX_WAIT_S = 300.0


async def stream_events(node: NodeView, request: web.Request) -> web.StreamResponse:
    after = _last_event_id(request)
    # Subscribed before the answer starts: a client that saw the headers misses nothing after them.
    with node.events.subscribe(job_id=request.query.get("job_id") or None, after=after) as sub:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # nginx would hold the stream back
            }
        )
        await resp.prepare(request)
        try:
            await _pump(sub, resp)
            await resp.write_eof()
        except ConnectionResetError:
            log.debug("event stream client went away")
    return resp


async def _pump(sub: Subscription, resp: web.StreamResponse) -> None:
    while True:
        event = await sub.get(KEEPALIVE_S)
        if event is None:
            if sub.ended:
                return  # the node is stopping, or this reader was dropped (its last event is sent)
            await resp.write(b": keep-alive\n\n")
            continue
        chunk = [event.sse()]
        while sub.pending and len(chunk) < BATCH:
            chunk.append(sub.pending.popleft().sse())
        await resp.write(b"".join(chunk))
        await asyncio.sleep(0)


def _last_event_id(request: web.Request) -> int | None:
    text = request.headers.get("Last-Event-ID", "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        return -1  # not one of ours: the client is told events are lost, then gets what is held


def wait_seconds(request: web.Request) -> float | None:
    """`?wait=` as seconds (None without it); 400 naming `wait` when it does not parse."""
    text = request.query.get("wait")
    if text is None:
        return None
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise SpecError([("wait", str(exc))]) from None
    if seconds > MAX_WAIT_S:
        raise SpecError([("wait", f"{text!r} is longer than the maximum of {MAX_WAIT_S:g} s (5m)")])
    return seconds


async def until_job_ends(sub: Subscription, timeout_s: float) -> None:
    """Return when a terminal `job` event comes, the bus closes, or `timeout_s` passes.
    `sub` must be subscribed to the job before its state was read."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while (left := deadline - loop.time()) > 0:
        event = await sub.get(left)
        if event is None or (event.kind == JOB and event.data.get("State") in TERMINAL_JOB_STATES):
            return
