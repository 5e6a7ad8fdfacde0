"""The event stream and long polls against a live node: order, resume, filter, stop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from aiohttp import web

from computenode.executors.docker_image import PullLayers
from tests.node.conftest import RunningNode

MakeNode = Callable[..., Awaitable[RunningNode]]
NOOP = {"Spec": {"Engine": "noop", "Publisher": "Local", "Resources": {"CPU": "100m"}}}
BUSYBOX = "computenode-test/busybox:latest"
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


# -- progress of long stages -------------------------------------------------------------------------

MIB = 1 << 20


@contextlib.asynccontextmanager
async def slow_file_server(size: int, pause_at: int, release: asyncio.Event) -> AsyncIterator[str]:
    """An http server on 127.0.0.1 sending `size` bytes in 64 KiB pieces, 20 ms apart, that stops
    at `pause_at` bytes until `release` is set; yields the file's URL."""

    async def send(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": str(size)})
        await resp.prepare(request)
        piece = b"x" * (64 << 10)
        for sent in range(0, size, len(piece)):
            if sent == pause_at:
                await release.wait()
            await resp.write(piece)
            await asyncio.sleep(0.02)
        return resp

    app = web.Application()
    app.router.add_get("/data.bin", send)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/data.bin"
    finally:
        release.set()
        await runner.cleanup()


async def test_url_download_progress_in_the_stream_and_the_execution(make_node: MakeNode) -> None:
    rn: RunningNode = await make_node(storage={"url": {"deny_private": False}})
    release = asyncio.Event()
    async with slow_file_server(6 * MIB, 3 * MIB, release) as url:
        job = {"Spec": {"Engine": "noop", "Publisher": "Local", "Resources": {"CPU": "100m"},
                        "inputs": [{"StorageSource": "URLDownload", "URL": url, "path": "/inputs"}]}}  # fmt: skip
        before = rn.node.events.last_id
        r = await rn.http.post("/api/v1/jobs", json=job)
        assert r.status_code == 201, r.text
        job_id, eid = r.json()["JobID"], r.json()["Executions"][0]["ExecutionID"]
        path = f"/api/v1/events?job_id={job_id}"
        async with await open_stream(rn, path, **{"Last-Event-ID": str(before)}) as resp:
            stream = Stream(resp)
            fetching = await stream.until(
                lambda ev: ev["event"] == "progress" and ev["data"].get("Bytes", 0) >= 2 * MIB
            )
            # Paused at 3 MiB: the execution shows the stage with its bytes, size and rate.
            body = (await rn.http.get(f"/api/v1/executions/{eid}")).json()
            shown = body["Progress"]
            assert shown["Stage"] == "fetching inputs" and shown["Bytes"] >= MIB, shown
            assert shown["TotalBytes"] == 6 * MIB and shown["Rate"] > 0 and shown["Elapsed"] > 0
            release.set()
            rest = await stream.until(job_ended(job_id))
    progress = [ev["data"] for ev in fetching + rest if ev["event"] == "progress"]
    counts = [d["Bytes"] for d in progress if d["Stage"] == "fetching inputs" and "Bytes" in d]
    assert len(counts) >= 3 and counts == sorted(counts) and counts[0] < counts[-1], counts
    assert all(d["ShardIndex"] == 0 and d["ExecutionID"] == eid for d in progress)
    assert [d["Stage"] for d in progress if "Bytes" not in d] == ["fetching inputs", "running", "publishing"]
    done = (await rn.http.get(f"/api/v1/executions/{eid}")).json()
    assert done["State"] == "Completed" and done["Progress"] is None


def docker_cli(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"docker {' '.join(args)} failed: {done.stderr}"
    return done.stdout


async def test_docker_image_pull_progress(make_node: MakeNode, docker_host: str, registry: str) -> None:
    # A fresh tag in the local registry, absent from the engine: the job must pull it.
    ref = f"{registry}/busybox:progress-{uuid.uuid4().hex[:10]}"
    await asyncio.to_thread(docker_cli, "tag", BUSYBOX, ref)
    try:
        await asyncio.to_thread(docker_cli, "push", ref)
        await asyncio.to_thread(docker_cli, "rmi", ref)
        rn: RunningNode = await make_node(engines={"docker": {"enabled": True, "host": docker_host}})
        job = {"Spec": {"Engine": "Docker", "Publisher": "Local",
                        "Docker": {"Image": ref, "Entrypoint": ["sh", "-c", "sleep 0.3; echo out"]}}}  # fmt: skip
        before = rn.node.events.last_id
        r = await rn.http.post("/api/v1/jobs", json=job)
        assert r.status_code == 201, r.text
        job_id = r.json()["JobID"]
        path = f"/api/v1/events?job_id={job_id}"
        async with await open_stream(rn, path, **{"Last-Event-ID": str(before)}) as resp:
            events = await Stream(resp).until(job_ended(job_id), timeout_s=120)
    finally:
        await asyncio.to_thread(subprocess.run, ["docker", "rmi", ref], capture_output=True, check=False)
    progress = [ev["data"] for ev in events if ev["event"] == "progress"]
    stages = [d["Stage"] for d in progress]
    assert stages.index("pulling image") < len(stages) - 1 - stages[::-1].index("running"), stages
    pulls = [d for d in progress if d["Stage"] == "pulling image"]
    assert pulls[0]["Image"] == ref  # layer counts follow at most 4 a second: a local pull is quicker


def test_pull_layers_sum_the_engine_lines() -> None:
    layers = PullLayers()
    lines = [
        {"status": "Pulling from busybox", "id": "1"},  # the tag, not a layer
        {"status": "Pulling fs layer", "progressDetail": {}, "id": "a"},
        {"status": "Already exists", "progressDetail": {}, "id": "b"},
        {"status": "Downloading", "progressDetail": {"current": 100, "total": 400}, "id": "a"},
        {"status": "Downloading", "progressDetail": {"current": 300, "total": 400}, "id": "a"},
        {"status": "Download complete", "progressDetail": {}, "id": "a"},
        {"status": "Extracting", "progressDetail": {"current": 50, "total": 400}, "id": "a"},
    ]
    changed = [layers.add(line) for line in lines]
    assert changed == [False, True, True, True, True, True, False]
    assert layers.detail() == {"Layers": 2, "LayersDone": 1, "Bytes": 400, "TotalBytes": 400}
    assert layers.add({"status": "Pull complete", "progressDetail": {}, "id": "a"})
    assert layers.detail()["LayersDone"] == 2 and not layers.add("not a dict")
