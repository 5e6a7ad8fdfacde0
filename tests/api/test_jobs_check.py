"""POST /api/v1/jobs/check (a dry run that stores nothing), job ID prefixes and the advertised IPFS API."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from tests.node.conftest import TEST_NODE_ID, RunningNode

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HELLO = (EXAMPLES / "hello-wasm.yaml").read_bytes()
YAML = {"Content-Type": "application/yaml"}


def row_counts(db: Path) -> dict[str, int]:
    """Every table's row count, read through a connection of the test's own."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        counts = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
    conn.close()
    return counts


async def test_check_runs_every_strategy_and_stores_nothing(make_node: Any) -> None:
    rn: RunningNode = await make_node()
    db = rn.node.data_dir / "computenode.db"
    before = row_counts(db)
    resp = await rn.http.post("/api/v1/jobs/check", content=HELLO, headers=YAML)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    assert answer["Accepted"] is True and answer["Shards"] == 1 and answer["NodeID"] == TEST_NODE_ID
    names = [v["Name"] for v in answer["Verdicts"]]
    for name in ("networking", "node_selectors", "timeout", "installed", "capacity", "draining", "queue"):
        assert name in names, name
    assert set(answer["Usage"]) == {"CPU", "Memory", "Disk", "GPU"}
    assert row_counts(db) == before  # no job, execution, plan, history or callback
    assert (await rn.http.get("/api/v1/jobs")).json()["Jobs"] == []


async def test_check_refusal_and_invalid_spec(make_node: Any) -> None:
    rn: RunningNode = await make_node()
    job = {"Spec": {"Engine": "Wasm", "Wasm": {"EntryModule": {"StorageSource": "Inline", "URL": "data:,x"}},
                    "Network": {"Type": "Full"}, "NodeSelectors": [{"Key": "zone", "Operator": "=", "Values": ["mars"]}]}}  # fmt: skip
    refused = (await rn.http.post("/api/v1/jobs/check", json=job)).json()
    assert refused["Accepted"] is False
    failed = {v["Name"] for v in refused["Verdicts"] if not v["OK"]}
    assert {"networking", "node_selectors"} <= failed
    bad = await rn.http.post("/api/v1/jobs/check", json={"Spec": {"Engine": "Docker"}})
    assert bad.status_code == 400 and bad.json()["errors"]
    await rn.node.set_drain("graceful")
    drained = (await rn.http.post("/api/v1/jobs/check", content=HELLO, headers=YAML)).json()
    assert drained["Accepted"] is False
    assert [v["OK"] for v in drained["Verdicts"] if v["Name"] == "draining"] == [False]


async def test_job_by_prefix(make_node: Any) -> None:
    rn: RunningNode = await make_node()
    ids = []
    for _ in range(2):
        created = await rn.http.post("/api/v1/jobs", content=HELLO, headers=YAML)
        assert created.status_code == 201, created.text
        ids.append(created.json()["JobID"])
    for job_id in ids:
        got = await rn.http.get(f"/api/v1/jobs/{job_id[:6]}")
        assert got.status_code == 200 and got.json()["Job"]["Metadata"]["ID"] == job_id
        assert (await rn.http.get(f"/api/v1/jobs/{job_id}")).json()["Job"]["Metadata"]["ID"] == job_id
    common = ""
    for a, b in zip(*ids, strict=True):
        if a != b:
            break
        common += a
    assert (await rn.http.get(f"/api/v1/jobs/{ids[0][:3]}")).status_code == 404  # under 4 characters
    assert (await rn.http.get("/api/v1/jobs/zzzzzz")).status_code == 404
    # Two jobs that share a 4-character prefix: a 409 naming both (found through the store's range
    # query, as two UUIDs rarely share one).
    assert sorted(await rn.node.job_ids_with_prefix("", 3)) == sorted(ids)
    if len(common) >= 4:
        ambiguous = await rn.http.get(f"/api/v1/jobs/{common}")
        assert ambiguous.status_code == 409 and sorted(ambiguous.json()["reasons"]) == sorted(ids)
    assert await rn.node.job_ids_with_prefix(ids[0][:8], 2) == [ids[0]]


async def test_ambiguous_prefix_is_409(make_node: Any, monkeypatch: Any) -> None:
    rn: RunningNode = await make_node()

    async def two(prefix: str, limit: int) -> list[str]:
        return [prefix + "-1", prefix + "-2"]

    monkeypatch.setattr(rn.node, "job_ids_with_prefix", two)
    resp = await rn.http.get("/api/v1/jobs/abcd")
    assert resp.status_code == 409
    assert resp.json()["reasons"] == ["abcd-1", "abcd-2"] and "abcd" in resp.json()["error"]


async def test_node_advertises_its_ipfs_api(make_node: Any, ipfs_api: str) -> None:
    rn: RunningNode = await make_node()
    assert (await rn.http.get("/api/v1/node")).json()["IPFS"] == {"API": ipfs_api}
