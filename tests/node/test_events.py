"""The event stream and long polls against a live node: order, resume, filter, stop."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

from tests.node.conftest import RunningNode

MakeNode = Callable[..., Awaitable[RunningNode]]
NOOP = {"Spec": {"Engine": "noop", "Publisher": "Local", "Resources": {"CPU": "100m"}}}
EXECUTION_STATES = ["Created", "BidAccepted", "Running", "WaitingVerification", "ResultAccepted",
                    "Publishing", "Completed"]  # fmt: skip


class Stream:
    """One SSE connection's events as dicts {event, id, data}; comments are skipped."""

    def __init__(self, resp: httpx.Response) -> None:
        self.resp = resp
        self.lines: AsyncIterator[str] = resp.aiter_lines()

    async def next(self, timeout_s: float = 30) -> dict[str, Any] | None:
        """The next event, None when the stream ended."""
        event: dict[str, Any] = {}
        async with asyncio.timeout(timeout_s):
            async for line in self.lines:
                if not line:
                    if event:
                        return event
                    continue
                if line.startswith(":"):
                    continue
                key, _, value = line.partition(": ")
                event[key] = json.loads(value) if key == "data" else int(value) if key == "id" else value
        return None

    async def until(self, pred: Any, timeout_s: float = 30) -> list[dict[str, Any]]:
        """Events up to and including the first that `pred` accepts."""
        got: list[dict[str, Any]] = []
        while True:
            ev = await self.next(timeout_s)
            assert ev is not None, f"stream ended after {got}"
            got.append(ev)
            if pred(ev):
                return got


def job_ended(job_id: str) -> Any:
    return lambda ev: ev["event"] == "job" and ev["data"] == {"JobID": job_id, "State": "Completed"}


async def open_stream(rn: RunningNode, path: str = "/api/v1/events", **headers: str) -> Any:
    return rn.http.stream("GET", path, headers=headers, timeout=httpx.Timeout(30, read=60))


async def submit(rn: RunningNode) -> str:
    r = await rn.http.post("/api/v1/jobs", json=NOOP)
    assert r.status_code == 201, r.text
    return str(r.json()["JobID"])


async def test_stream_has_job_execution_and_progress_events_in_order(make_node: MakeNode) -> None:
    rn: RunningNode = await make_node()
    async with await open_stream(rn) as resp:
        assert resp.status_code == 200 and resp.headers["Content-Type"] == "text/event-stream"
        stream = Stream(resp)
        job_id = await submit(rn)
        events = await stream.until(job_ended(job_id))
    ids = [ev["id"] for ev in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) and ids == list(range(ids[0], ids[0] + len(ids)))
    assert [ev["data"]["State"] for ev in events if ev["event"] == "execution"] == EXECUTION_STATES
    assert [ev["data"]["State"] for ev in events if ev["event"] == "job"] == ["InProgress", "Completed"]
    stages = [ev["data"]["Stage"] for ev in events if ev["event"] == "progress"]
    assert stages == ["fetching inputs", "running", "publishing"]
    assert all(ev["data"]["JobID"] == job_id for ev in events)
    kinds = [(ev["event"], ev["data"].get("State") or ev["data"].get("Stage")) for ev in events]
    assert kinds.index(("execution", "Running")) < kinds.index(("progress", "running"))
    assert kinds.index(("progress", "running")) < kinds.index(("execution", "WaitingVerification"))


async def test_resume_replays_exactly_the_missed_events(make_node: MakeNode) -> None:
    rn: RunningNode = await make_node()
    async with await open_stream(rn) as resp:
        first = await submit(rn)
        seen = await Stream(resp).until(job_ended(first))
    cut = seen[2]["id"]
    second = ""
    async with await open_stream(rn, **{"Last-Event-ID": str(cut)}) as resp:
        stream = Stream(resp)
        replayed = [await stream.next() for _ in seen[3:]]
        assert replayed == seen[3:]
        second = await submit(rn)  # what comes next is live, right after the replay
        nxt = await stream.next()
        assert nxt is not None and nxt["data"]["JobID"] == second and nxt["id"] == seen[-1]["id"] + 1
    async with await open_stream(rn, **{"Last-Event-ID": str(seen[0]["id"] - 1000)}) as resp:
        lost = await Stream(resp).next()
        assert lost is not None and lost["event"] == "lost" and "id" not in lost, lost


async def test_job_id_filter(make_node: MakeNode) -> None:
    rn: RunningNode = await make_node(engines={"noop": {"enabled": True, "delay": "0.2s"}})
    before = rn.node.events.last_id
    first, second = await submit(rn), await submit(rn)
    path = f"/api/v1/events?job_id={first}"
    async with await open_stream(rn, path, **{"Last-Event-ID": str(before)}) as resp:
        events = await Stream(resp).until(job_ended(first))
    assert {ev["data"]["JobID"] for ev in events} == {first} != {second}
    assert [ev["data"]["State"] for ev in events if ev["event"] == "execution"] == EXECUTION_STATES


async def test_long_poll_answers_at_completion_and_at_the_timeout(make_node: MakeNode) -> None:
    rn: RunningNode = await make_node(engines={"noop": {"enabled": True, "delay": "0.5s"}})
    job_id = await submit(rn)
    start = time.monotonic()
    r = await rn.http.get(f"/api/v1/jobs/{job_id}", params={"wait": "30s"})
    assert r.status_code == 200 and r.json()["State"] == "Completed", r.text
    assert time.monotonic() - start < 10  # the job's end, not the 30 s
    assert r.json()["Shards"][0]["State"] == "Completed"
    plain = (await rn.http.get(f"/api/v1/jobs/{job_id}")).json()
    assert plain == r.json()  # the same body as without wait


async def test_long_poll_times_out_on_a_running_job_and_checks_its_value(make_node: MakeNode) -> None:
    rn: RunningNode = await make_node(engines={"noop": {"enabled": True, "delay": "30s"}})
    job_id = await submit(rn)
    start = time.monotonic()
    r = await rn.http.get(f"/api/v1/jobs/{job_id}", params={"wait": "300ms"})
    assert r.status_code == 200 and r.json()["State"] == "InProgress"
    assert 0.3 <= time.monotonic() - start < 5
    for bad in ("soon", "-1s", "6m"):
        r = await rn.http.get(f"/api/v1/jobs/{job_id}", params={"wait": bad})
        assert r.status_code == 400 and r.json()["errors"][0]["field"] == "wait", r.text
    r = await rn.http.get("/api/v1/jobs/nope", params={"wait": "1s"})
    assert r.status_code == 404
    await rn.http.post(f"/api/v1/jobs/{job_id}/cancel")
    r = await rn.http.get(f"/api/v1/jobs/{job_id}", params={"wait": "30s"})
    assert r.json()["State"] == "Cancelled"


async def test_node_stops_promptly_with_a_stream_and_a_long_poll_open(make_node: MakeNode) -> None:
    rn: RunningNode = await make_node(engines={"noop": {"enabled": True, "delay": "30s"}})
    job_id = await submit(rn)
    async with httpx.AsyncClient(base_url=rn.url, timeout=60) as http:
        poll = asyncio.create_task(http.get(f"/api/v1/jobs/{job_id}", params={"wait": "5m"}))
        async with http.stream("GET", "/api/v1/events") as resp:
            stream = Stream(resp)
            await asyncio.sleep(0.1)  # both requests are in the node's hands
            start = time.monotonic()
            stopping = asyncio.create_task(rn.stop())
            rest: list[dict[str, Any]] = []
            while (ev := await stream.next()) is not None:
                rest.append(ev)
            assert await stopping == 0
            grace = 2.0  # tests/node/conftest.py's timeouts.drain_grace
            assert time.monotonic() - start < grace + 3
        # The drain cancelled the job: its stream saw that before it ended, and the poll answered.
        assert {"JobID": job_id, "State": "Cancelled"} in [ev["data"] for ev in rest]
        assert (await poll).json()["State"] == "Cancelled"


async def test_a_full_ring_replays_without_blocking_the_loop(make_node: MakeNode) -> None:
    rn: RunningNode = await make_node()
    bus = rn.node.events
    start = bus.last_id
    for i in range(12_000):
        bus.execution(f"e-{i}", "j-fake", 0, "Running", "x" * 50)
    async with await open_stream(rn, **{"Last-Event-ID": str(start)}) as resp:
        stream = Stream(resp)
        lost = await stream.next()
        assert lost is not None and lost["event"] == "lost"
        ids = [(await stream.next() or {}).get("id") for _ in range(10_000)]
    assert ids == list(range(bus.last_id - 9_999, bus.last_id + 1))
