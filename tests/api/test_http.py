"""The API's shared HTTP behaviour: field lookup, body limits, and JSON answers for every error."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest

from computenode.api.base import NodeView
from computenode.api.http import INTERNAL_ERROR, MAX_BODY, field, required_field, str_field
from computenode.errors import SpecError
from computenode.node import Node
from tests.node.conftest import TEST_NODE_ID, RunningNode, node_settings


def test_field_lookup_ignores_case_as_go_does() -> None:
    body: dict[str, Any] = {"ExecutionID": "e-1", "justification": "why", "Count": 0}
    assert field(body, "executionid") == "e-1"
    assert field(body, "Justification") == "why"
    assert field(body, "count") == 0  # a falsy value is still found
    assert field(body, "missing") is None
    assert field(body, "missing", [0]) == [0]


def test_required_and_string_fields() -> None:
    body: dict[str, Any] = {"job_id": "j-1", "max_jobs": 3, "none": None}
    assert required_field(body, "JOB_ID") == "j-1"
    with pytest.raises(SpecError) as missing:
        required_field(body, "Job")
    assert missing.value.errors == [("Job", "is required")]
    assert str_field(body, "job_id") == "j-1"
    assert str_field(body, "none") == "" and str_field(body, "absent") == ""
    with pytest.raises(SpecError) as wrong:
        str_field(body, "max_jobs")
    assert wrong.value.errors == [("max_jobs", "must be a string")]


def test_node_is_a_node_view(tmp_path: Path) -> None:
    view: NodeView = Node(node_settings(tmp_path, "/ip4/127.0.0.1/tcp/9"))  # mypy checks conformance
    assert view.labels == {"env": "test"}


async def test_unexpected_error_is_json_500_and_node_stays_up(
    make_node: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    rn: RunningNode = await make_node()

    def broken() -> None:
        raise RuntimeError("a bug in a handler")

    monkeypatch.setattr(rn.node, "capacity", broken)
    with caplog.at_level(logging.ERROR, logger="computenode.api.http"):
        resp = await rn.http.get("/api/v1/node")
    assert resp.status_code == 500
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.json() == {"error": INTERNAL_ERROR}
    [record] = [r for r in caplog.records if r.getMessage() == "request failed"]
    assert record.exc_info is not None and "a bug in a handler" in str(record.exc_info[1])
    assert (await rn.http.get("/healthz")).json() == {"status": "ok"}
    monkeypatch.undo()
    assert (await rn.http.get("/api/v1/node")).json()["ID"] == TEST_NODE_ID


async def test_bodies_over_the_limits_get_json_errors(make_node: Any) -> None:
    rn: RunningNode = await make_node()
    too_large = await rn.http.post("/api/v1/jobs", content=b" " * (MAX_BODY + 1))
    assert too_large.status_code == 413
    assert "error" in too_large.json()
    # Under the HTTP limit but over a job document's: the field error shape.
    big_job = await rn.http.post("/api/v1/jobs", content=b" " * (MAX_BODY - 1024))
    assert big_job.status_code == 400
    assert big_job.json()["error"] == "invalid job spec"
    assert "bytes" in big_job.json()["errors"][0]["message"]


async def test_malformed_bodies_and_unknown_paths_get_json_errors(make_node: Any) -> None:
    rn: RunningNode = await make_node()
    bad = await rn.http.post("/api/v1/compute/bid_accepted", content=b"{not json")
    assert bad.status_code == 400
    assert bad.json() == {
        "error": "invalid job spec",
        "errors": [{"field": "", "message": "body is not JSON"}],
    }
    missing = await rn.http.post("/api/v1/compute/bid_accepted", json={"executionid": "e-unknown"})
    assert missing.status_code == 404 and missing.json()["error"].startswith("not found")
    unknown = await rn.http.get("/api/v1/nothing-here")
    assert unknown.status_code == 404 and "error" in unknown.json()
    wrong_method = await rn.http.delete("/healthz")
    assert wrong_method.status_code == 405 and "GET" in wrong_method.headers["Allow"]


async def test_error_mid_stream_closes_the_connection_and_node_stays_up(
    make_node: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    rn: RunningNode = await make_node(engines={"noop": {"enabled": True, "delay": "60s"}})
    job_id = (await rn.http.post("/api/v1/jobs", json={"Spec": {"Engine": "Noop"}})).json()["JobID"]
    [ex] = (await rn.http.get(f"/api/v1/executions?job_id={job_id}")).json()["Executions"]
    eid = ex["ExecutionID"]
    await rn.wait_execution(eid, {"Running"})
    calls = 0
    execution = rn.node.execution

    async def fails_later(execution_id: str) -> Any:
        nonlocal calls
        calls += 1
        if calls > 1:  # after the log stream has begun
            raise RuntimeError("a bug mid-stream")
        return await execution(execution_id)

    monkeypatch.setattr(rn.node, "execution", fails_later)
    with pytest.raises(httpx.RemoteProtocolError):  # no JSON error glued onto a half-sent answer
        await rn.http.get(f"/api/v1/executions/{eid}/logs?follow=true")
    monkeypatch.undo()
    assert (await rn.http.get("/healthz")).status_code == 200
    await rn.http.post(f"/api/v1/jobs/{job_id}/cancel")


@pytest.mark.parametrize(
    "indexes", [[0, 0], [0] * 1001, list(range(1001))], ids=["twice", "1001-same", "1001"]
)
async def test_ask_for_bid_refuses_repeated_or_too_many_shard_indexes(
    make_node: Any, indexes: list[int]
) -> None:
    # Found by tests/api/test_fuzz.py: each repeat of an index was a bid of its own, and checking
    # capacity for a thousand of them blocked the event loop for half a second.
    rn: RunningNode = await make_node()
    body = {"Job": {"Spec": {"Engine": "Noop"}}, "ShardIndexes": indexes}
    resp = await rn.http.post("/api/v1/compute/ask_for_bid", json=body)
    assert resp.status_code == 400, resp.text
    assert [e["field"] for e in resp.json()["errors"]] == ["ShardIndexes"]
    assert (await rn.http.get("/api/v1/executions")).json()["Executions"] == []
