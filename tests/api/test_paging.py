"""Paged GET /api/v1/executions and GET /api/v1/jobs: every filter, stable cursors, bad parameters."""

from __future__ import annotations

import json
from typing import Any

from computenode.model import ExecutionState as S
from computenode.store import Execution, JobRecord, Store
from tests.node.conftest import RunningNode

N = 250


async def fill(store: Store) -> None:
    """N jobs, one execution each; every third job labelled "odd", every fifth execution Running,
    the others Cancelled."""
    for i in range(N):
        labels = ["odd"] if i % 3 == 0 else []
        doc = {"Spec": {"Annotations": labels}}
        await store.put_job(JobRecord(f"j-{i:04d}", json.dumps(doc), owned=True))
        await store.create(Execution(f"e-{i:04d}", f"j-{i:04d}", 0))
        if i % 5 == 0:
            await store.transition(f"e-{i:04d}", S.BID_ACCEPTED)
            await store.transition(f"e-{i:04d}", S.RUNNING)
        else:
            await store.transition(f"e-{i:04d}", S.CANCELLED)


async def walk(rn: RunningNode, path: str, key: str, id_key: str, **params: Any) -> list[str]:
    ids: list[str] = []
    cursor = ""
    while True:
        resp = await rn.http.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        ids += [item[id_key] for item in body[key]]
        cursor = body["Next"]
        if not cursor:
            return ids


async def test_executions_pages_with_every_filter(make_node: Any) -> None:
    rn: RunningNode = await make_node()
    await fill(rn.node.store)
    every = [f"e-{i:04d}" for i in reversed(range(N))]
    assert await walk(rn, "/api/v1/executions", "Executions", "ExecutionID") == every[:0] + every
    assert len((await rn.http.get("/api/v1/executions")).json()["Executions"]) == 100  # the default
    assert await walk(rn, "/api/v1/executions", "Executions", "ExecutionID", limit=7) == every
    running = [e for e in every if int(e[2:]) % 5 == 0]
    assert (
        await walk(rn, "/api/v1/executions", "Executions", "ExecutionID", state="Running", limit=9) == running
    )
    assert await walk(rn, "/api/v1/executions", "Executions", "ExecutionID", job_id="j-0042") == ["e-0042"]


async def test_jobs_pages_with_every_filter(make_node: Any) -> None:
    rn: RunningNode = await make_node()
    await fill(rn.node.store)
    every = [f"j-{i:04d}" for i in reversed(range(N))]
    assert await walk(rn, "/api/v1/jobs", "Jobs", "JobID", limit=11) == every
    first = (await rn.http.get("/api/v1/jobs", params={"limit": 1})).json()["Jobs"][0]
    assert first["JobID"] == "j-0249" and first["State"] == "Cancelled" and first["Shards"] == 1
    assert first["Annotations"] == ["odd"]  # 249 = 3 x 83
    odd = [j for j in every if int(j[2:]) % 3 == 0]
    assert await walk(rn, "/api/v1/jobs", "Jobs", "JobID", label="odd", limit=8) == odd
    progress = [j for j in every if int(j[2:]) % 5 == 0]
    assert await walk(rn, "/api/v1/jobs", "Jobs", "JobID", state="InProgress", limit=8) == progress
    since = (await rn.node.store.get_job("j-0200")).created_at
    assert await walk(rn, "/api/v1/jobs", "Jobs", "JobID", since=str(since)) == every[:50]
    both = [j for j in odd if j in progress and j in every[:50]]
    assert (
        await walk(rn, "/api/v1/jobs", "Jobs", "JobID", since=str(since), label="odd", state="InProgress")
        == both
    )


async def test_a_cursor_stays_put_while_rows_arrive(make_node: Any) -> None:
    rn: RunningNode = await make_node()
    await fill(rn.node.store)
    body = (await rn.http.get("/api/v1/executions", params={"limit": 100})).json()
    for i in range(N, N + 30):  # newer rows: they go before the first page, never into the next one
        await rn.node.store.put_job(JobRecord(f"j-{i:04d}", "{}", owned=True))
        await rn.node.store.create(Execution(f"e-{i:04d}", f"j-{i:04d}", 0))
    page = (await rn.http.get("/api/v1/executions", params={"limit": 100, "cursor": body["Next"]})).json()
    assert [e["ExecutionID"] for e in page["Executions"]] == [f"e-{i:04d}" for i in reversed(range(50, 150))]
    jobs = (await rn.http.get("/api/v1/jobs", params={"limit": 10})).json()
    assert jobs["Jobs"][0]["JobID"] == f"j-{N + 29:04d}"


async def test_bad_parameters_are_400_naming_the_field(make_node: Any) -> None:
    rn: RunningNode = await make_node()
    cases = [
        ("/api/v1/executions", {"limit": "0"}, "limit"),
        ("/api/v1/executions", {"limit": "1001"}, "limit"),
        ("/api/v1/executions", {"limit": "ten"}, "limit"),
        ("/api/v1/executions", {"cursor": "not-a-cursor"}, "cursor"),
        ("/api/v1/executions", {"state": "Sleeping"}, "state"),
        ("/api/v1/jobs", {"cursor": "WzEsMl0="}, "cursor"),  # [1,2]: the id is no string
        ("/api/v1/jobs", {"since": "yesterday"}, "since"),
        ("/api/v1/jobs", {"since": "nan"}, "since"),
        ("/api/v1/jobs", {"state": "Running"}, "state"),
        ("/api/v1/jobs", {"limit": "-5"}, "limit"),
    ]
    for path, params, name in cases:
        resp = await rn.http.get(path, params=params)
        assert resp.status_code == 400, (path, params)
        assert [e["field"] for e in resp.json()["errors"]] == [name], (path, params)
    ok = await rn.http.get("/api/v1/jobs", params={"since": "2020-01-01T00:00:00Z"})
    assert ok.status_code == 200 and ok.json() == {"Jobs": [], "Next": ""}
