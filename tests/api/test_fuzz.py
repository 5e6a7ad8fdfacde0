"""Fuzzing a live node: thousands of generated and damaged job specs on the endpoints that take jobs.

The cases come from tests/api/fuzzcases.py, built in a thread (building and RSA-signing them
would block this test's loop) one chunk ahead of the chunk being sent. Every answer must keep
the API's contract (fuzzcases.answer_problem), and /healthz and /readyz must keep answering
while the node takes the load and after. The mutator is seeded and hypothesis derandomized, so
a failure names a case that fails the same way on the next run.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from tests.api.fuzzcases import BID, JOBS, SUBMIT, Case, CaseMaker, answer_problem, hypothesis_cases
from tests.node.conftest import RunningNode
from tests.requester.keys import client_key

MUTATED_CASES = 5_000
HYPOTHESIS_CASES = 600
CHUNK = 250
CONCURRENCY = 16


@pytest.fixture(scope="module", autouse=True)
def _client_keys_made_outside_the_loop() -> None:
    # RSA key generation takes ~50 ms of CPU each: made here, cached, not on the test's loop.
    client_key(0), client_key(1)


def _settings() -> dict[str, Any]:
    # Room for many cheap Noop jobs at once, bids that expire quickly to give their room back,
    # and probes of inputs that give up soon (the fuzz's CIDs are mostly not in kubo).
    return {
        "capacity": {"total": {"cpu": "64", "memory": "64Gi", "disk": "100Gi"}},
        "timeouts": {"bid_expiry": "2s", "drain_grace": "2s"},
        "job_selection": {"locality": "anywhere", "probe_timeout": "1s"},
        "logging": {"level": "error"},
    }


class Fuzz:
    def __init__(self, rn: RunningNode) -> None:
        self.rn = rn
        self.problems: list[str] = []
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.jobs: list[str] = []  # owned jobs made, cancelled at the end
        self.bids: list[str] = []  # executions bid, rejected at the end
        self.sem = asyncio.Semaphore(CONCURRENCY)

    async def send(self, case: Case) -> None:
        async with self.sem:
            resp = await self.rn.http.post(case.path, content=case.body)
        self.statuses[(case.path, resp.status_code)] += 1
        problem = answer_problem(case, resp.status_code, resp.text)
        if problem:
            self.problems.append(f"{problem}: {resp.text[:600]}\n    case: {case.describe()}")
            return
        if resp.status_code in (200, 201):
            self._remember(case.path, resp.json())

    def _remember(self, path: str, body: dict[str, Any]) -> None:
        if path == JOBS:
            self.jobs.append(body["JobID"])
        elif path == SUBMIT:
            self.jobs.append(body["job"]["Metadata"]["ID"])
        elif path == BID:
            self.bids += [s["ExecutionID"] for s in body["ShardResponse"] if s["Accepted"]]

    async def send_all(self, cases: list[Case]) -> None:
        await asyncio.gather(*(self.send(c) for c in cases))

    async def watch_health(self, stop: asyncio.Event) -> int:
        """Poll /healthz and /readyz until `stop`; the number of polls."""
        polls = 0
        while not stop.is_set():
            health = await self.rn.http.get("/healthz")
            ready = await self.rn.http.get("/readyz")
            if health.status_code != 200:
                self.problems.append(f"/healthz answered {health.status_code}: {health.text[:300]}")
            if ready.status_code not in (200, 503) or ready.json()["status"] not in ("ok", "degraded"):
                self.problems.append(f"/readyz answered {ready.status_code}: {ready.text[:300]}")
            polls += 1
            await asyncio.sleep(0.05)
        return polls

    async def clean_up(self) -> None:
        """Cancel the owned jobs, reject the open bids, and wait until nothing is left running."""
        for job_id in self.jobs:
            resp = await self.rn.http.post(f"/api/v1/jobs/{job_id}/cancel")
            assert resp.status_code in (200, 409), resp.text
        for eid in self.bids:
            resp = await self.rn.http.post("/api/v1/compute/bid_rejected", json={"ExecutionID": eid})
            assert resp.status_code in (200, 409), resp.text  # 409: it expired first
        async with asyncio.timeout(30):
            while await self.rn.node.active_executions():
                await self.rn.node.compute.wait_changed(0.2)
        crashed = [
            e.id
            for e in await self.rn.node.executions(state=None, limit=100_000)
            if "internal error" in e.comment
        ]
        if crashed:
            self.problems.append(f"executions that ended in an internal error: {crashed[:10]}")


async def _chunks(make: Callable[[int], list[Case]], total: int) -> Any:
    """`total` cases in chunks, each built in a thread while the one before is being sent."""
    pending = asyncio.ensure_future(asyncio.to_thread(make, min(CHUNK, total)))
    made = 0
    while made < total:
        chunk = await pending
        made += len(chunk)
        if made < total:
            pending = asyncio.ensure_future(asyncio.to_thread(make, min(CHUNK, total - made)))
        yield chunk


async def test_fuzzed_job_specs_never_break_the_api_or_the_node(make_node: Any) -> None:
    rn = await make_node(**_settings())
    fuzz = Fuzz(rn)
    keys = [client_key(0), client_key(1)]
    maker = CaseMaker(20240601, keys)
    stop = asyncio.Event()
    watcher = asyncio.create_task(fuzz.watch_health(stop))
    started = time.monotonic()

    sent = 0
    try:
        async for chunk in _chunks(maker.cases, MUTATED_CASES):
            await fuzz.send_all(chunk)
            sent += len(chunk)
            assert not fuzz.problems, "\n".join(fuzz.problems[:20])
        structured = await asyncio.to_thread(hypothesis_cases, HYPOTHESIS_CASES, keys)
        await fuzz.send_all(structured)
        sent += len(structured)
    finally:
        stop.set()
        polls = await watcher
    await fuzz.clean_up()
    assert (await rn.http.get("/healthz")).status_code == 200
    assert (await rn.http.get("/readyz")).status_code == 200
    assert not fuzz.problems, "\n".join(fuzz.problems[:20])

    elapsed = time.monotonic() - started
    by_status = ", ".join(f"{p} {s}: {n}" for (p, s), n in sorted(fuzz.statuses.items()))
    print(f"\n{sent} cases in {elapsed:.1f} s, {polls} health polls; {by_status}")
    assert sent >= MUTATED_CASES + 1
    # Accepted, refused and invalid answers each on every endpoint: the fuzz reached past parsing.
    for path, status in ((JOBS, 201), (JOBS, 400), (JOBS, 409), (BID, 200), (BID, 400), (SUBMIT, 200)):
        assert fuzz.statuses[(path, status)] > 0, (path, status, by_status)
    assert fuzz.statuses[(SUBMIT, 403)] > 0 and fuzz.statuses[(SUBMIT, 400)] > 0, by_status
