"""Progress of a job while the CLI waits for it: each shard's stage, from the node's event stream.

`GET /api/v1/events?job_id=` (docs/events.md) is read in a background thread with its own
event loop, so the main thread keeps waiting (the long poll of NodeClient.wait) and keeps
Ctrl-C. On a terminal one status line per shard is redrawn in place; otherwise a plain line is
printed when a shard's stage changes (and at most every PLAIN_EVERY_S while bytes move). It
writes to stderr: stdout stays the job's result, as without progress.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx

from computenode.client import NodeClient

PLAIN_EVERY_S = 5.0  # plain lines: a stage's byte counts at most this often
TICK_S = 0.5  # a terminal's lines are redrawn this often (elapsed time moves)
RETRY_S = 1.0  # wait before reconnecting a stream that ended
MAX_LINES = 20  # shards shown on a terminal; the rest are counted on one line
SNAPSHOT_MAX = 32  # executions read once after connecting (the state before the stream)
STATES = {
    "Created": "waiting for the bid",
    "BidAccepted": "bid accepted",
    "Running": "starting",
    "WaitingVerification": "verifying",
    "ResultAccepted": "result accepted",
    "Publishing": "publishing",
    "Completed": "completed",
    "Failed": "failed",
    "Cancelled": "cancelled",
}
ENDED = ("completed", "failed", "cancelled")


@dataclass(slots=True)
class Shard:
    stage: str = ""
    since: float = field(default_factory=time.monotonic)  # when the stage began, on this clock
    detail: dict[str, Any] = field(default_factory=dict)
    printed: tuple[str, float] = ("", 0.0)  # plain mode: the stage last printed and when


def human_bytes(n: float) -> str:
    for unit in ("GiB", "MiB", "KiB"):
        size = {"GiB": 1 << 30, "MiB": 1 << 20, "KiB": 1 << 10}[unit]
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def human_seconds(s: float) -> str:
    s = int(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def describe(shard: Shard, now: float, elapsed: bool = True) -> str:
    """A shard's stage with what is known of it: image, layers, bytes, rate, elapsed time."""
    d = shard.detail
    parts = [shard.stage + (f" {d['Image']}" if d.get("Image") else "")]
    if d.get("Publisher"):
        parts[0] += f" ({d['Publisher']})"
    counts = []
    if d.get("Layers"):
        counts.append(f"{d.get('LayersDone', 0)}/{d['Layers']} layers")
    if d.get("Bytes") is not None:
        size = f" of {human_bytes(d['TotalBytes'])}" if d.get("TotalBytes") else ""
        counts.append(f"{human_bytes(d['Bytes'])}{size}")
    if d.get("Rate"):
        counts.append(f"{human_bytes(d['Rate'])}/s")
    if counts:
        parts.append(", ".join(counts))
    if d.get("Comment") and shard.stage in ("failed", "cancelled"):
        parts.append(str(d["Comment"]))
    if elapsed and shard.stage not in ENDED:
        parts.append(human_seconds(now - shard.since))
    return "  ".join(parts)


class ProgressDisplay:
    """Shows a job's progress until stopped; `live` redraws lines in place (a terminal)."""

    def __init__(
        self, node: NodeClient, job_id: str, executions: list[dict[str, Any]], out: TextIO, live: bool
    ) -> None:
        self.base_url = node.base_url
        self.headers = node.auth_headers
        self.job_id = job_id
        self.executions = [str(e.get("ExecutionID")) for e in executions if e.get("ExecutionID")]
        self.out = out
        self.live = live
        self.shards: dict[int, Shard] = {
            int(e.get("ShardIndex") or 0): Shard(STATES.get(str(e.get("State")), str(e.get("State"))))
            for e in executions
        }
        self.drawn = 0  # lines drawn last time (live)
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(5)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    # -- the thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        self._draw()
        async with httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5.0)) as http:
            tasks = [asyncio.create_task(self._read(http))]
            if self.live:
                tasks.append(asyncio.create_task(self._tick()))
            await self._stop.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._draw()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self._draw()

    async def _read(self, http: httpx.AsyncClient) -> None:
        """The job's events, reconnecting (from the last ID seen) when the stream ends."""
        last_id = ""
        first = True
        while True:
            headers = self.headers | ({"Last-Event-ID": last_id} if last_id else {})
            try:
                async with http.stream(
                    "GET", f"{self.base_url}/api/v1/events", params={"job_id": self.job_id}, headers=headers
                ) as resp:
                    if resp.status_code != 200:
                        return  # a node without the event stream: the wait goes on without progress
                    if first:  # subscribed now: read what happened before, once
                        first = False
                        await self._snapshot(http)
                    async for kind, event_id, data in sse(resp):
                        last_id = event_id or last_id
                        self._apply(kind, data)
            except (httpx.HTTPError, ValueError):
                pass  # the node went away or sent something unreadable: try again shortly
            await asyncio.sleep(RETRY_S)

    async def _snapshot(self, http: httpx.AsyncClient) -> None:
        for eid in self.executions[:SNAPSHOT_MAX]:
            resp = await http.get(f"{self.base_url}/api/v1/executions/{eid}", headers=self.headers)
            if resp.status_code != 200:
                continue
            body = resp.json()
            self._apply("execution", body)
            if body.get("Progress"):
                self._apply("progress", body["Progress"] | {"ShardIndex": body.get("ShardIndex")})

    def _apply(self, kind: str, data: dict[str, Any]) -> None:
        if kind not in ("execution", "progress") or not isinstance(data.get("ShardIndex"), int):
            return
        index = data["ShardIndex"]
        if kind == "execution":
            stage = STATES.get(str(data.get("State")), str(data.get("State")).lower())
            detail = {"Comment": data.get("Comment")}
        else:
            stage, detail = str(data.get("Stage")), data
        shard = self.shards.setdefault(index, Shard())
        now = time.monotonic()
        if stage != shard.stage:
            shard.since = now - float(detail.get("Elapsed") or 0.0)
        shard.stage, shard.detail = stage, detail
        if not self.live:
            printed, at = shard.printed
            moving = detail.get("Bytes") is not None and now - at >= PLAIN_EVERY_S
            if stage != printed or moving:
                shard.printed = (stage, now)
                # A stage's first line has no elapsed time yet; byte updates say how long so far.
                self._write(f"shard {index}: {describe(shard, now, elapsed=stage == printed)}\n")
        self._draw()

    def _draw(self) -> None:
        """A terminal: every shard's line redrawn where it was."""
        if not self.live or not self.shards:
            return
        now = time.monotonic()
        width = max(shutil.get_terminal_size().columns - 1, 20)
        indexes = sorted(self.shards)
        lines = [f"shard {i}: {describe(self.shards[i], now)}"[:width] for i in indexes[:MAX_LINES]]
        if len(indexes) > MAX_LINES:
            lines.append(f"... and {len(indexes) - MAX_LINES} more shards")
        up = f"\x1b[{self.drawn}F" if self.drawn else ""
        self._write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
        self.drawn = len(lines)

    def _write(self, text: str) -> None:
        try:
            self.out.write(text)
            self.out.flush()
        except (OSError, ValueError):
            self.live = False  # the terminal went away: nothing more to show


async def sse(resp: httpx.Response) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
    """Server-Sent Events as (event, id, data); comment lines (keep-alives) are skipped."""
    kind, event_id, data = "", "", ""
    async for line in resp.aiter_lines():
        if not line:
            if data:
                yield kind or "message", event_id, json.loads(data)
            kind, event_id, data = "", "", ""
        elif line.startswith(":"):
            continue
        else:
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "event":
                kind = value
            elif key == "id":
                event_id = value
            elif key == "data":
                data = f"{data}\n{value}" if data else value


@contextmanager
def shown(
    node: NodeClient, job_id: str, executions: list[dict[str, Any]], enabled: bool
) -> Iterator[ProgressDisplay | None]:
    """Progress while the body waits (nothing when not `enabled`, e.g. --json); lines are
    redrawn in place when stdout and stderr are both a terminal, plain otherwise."""
    if not enabled:
        yield None
        return
    display = ProgressDisplay(
        node, job_id, executions, sys.stderr, sys.stdout.isatty() and sys.stderr.isatty()
    )
    display.start()
    try:
        yield display
    finally:
        display.stop()
