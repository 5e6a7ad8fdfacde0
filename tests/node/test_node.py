"""The node end to end over HTTP: owned jobs, the compute endpoint, capacity, callbacks, errors."""

from __future__ import annotations

import asyncio
import io
import tarfile
from typing import Any

import httpx

from tests.node.conftest import TEST_NODE_ID, CallbackServer, RunningNode

NOOP_JOB: dict[str, Any] = {"APIVersion": "V1beta1", "Spec": {"Engine": "Noop", "Publisher": "Local"}}


def noop_job(cpu: str = "100m", **spec: Any) -> dict[str, Any]:
    return {"Spec": {"Engine": "noop", "Publisher": "Local", "Resources": {"CPU": cpu}, **spec}}


async def test_owned_noop_job_completes_and_results_are_served(make_node) -> None:
    rn: RunningNode = await make_node()
    resp = await rn.http.post("/api/v1/jobs", json=NOOP_JOB)
    assert resp.status_code == 201, resp.text
    job_id = resp.json()["JobID"]
    body = await rn.wait_job(job_id)
    assert body["State"] == "Completed"
    [shard] = body["Shards"]
    assert shard["State"] == "Completed" and shard["NodeId"] == TEST_NODE_ID
    assert shard["RunOutput"]["exitCode"] == 0
    published = shard["PublishedResults"]
    assert published["StorageSource"] == "URLDownload"
    async with httpx.AsyncClient() as http:
        tar_bytes = (await http.get(published["URL"])).content
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        names = {m.name.lstrip("./") for m in tar.getmembers()}
    assert {"stdout", "stderr", "exitCode"} <= names
    ex = (await rn.http.get(f"/api/v1/executions/{shard['ExecutionId']}")).json()
    assert [h["NewState"] for h in ex["History"]] == [
        "Created", "BidAccepted", "Running", "WaitingVerification", "ResultAccepted", "Publishing", "Completed",
    ]  # fmt: skip


async def test_compute_endpoint_with_callbacks(make_node, callbacks: CallbackServer) -> None:
    rn: RunningNode = await make_node()
    resp = await rn.http.post("/api/v1/compute/ask_for_bid",
                              json={"Job": noop_job(), "ShardIndexes": [0], "CallbackURL": callbacks.url})  # fmt: skip
    assert resp.status_code == 200, resp.text
    [answer] = resp.json()["ShardResponse"]
    assert answer["Accepted"] is True and answer["Reason"] == ""
    eid = answer["ExecutionID"]
    assert (await rn.http.post("/api/v1/compute/bid_accepted", json={"ExecutionID": eid})).status_code == 200
    # Accepting twice is a state conflict, not a crash.
    again = await rn.http.post("/api/v1/compute/bid_accepted", json={"ExecutionID": eid})
    assert again.status_code == 409 and again.json()["reasons"]
    run = await callbacks.wait_for("on_run_complete", eid)
    assert set(run["RunCommandResult"]) == {"stdout", "stdouttruncated", "stderr", "stderrtruncated", "exitCode",
                                            "runnerError"}  # fmt: skip
    assert (
        await rn.http.post("/api/v1/compute/result_accepted", json={"ExecutionID": eid})
    ).status_code == 200
    done = await callbacks.wait_for("on_publish_complete", eid)
    assert done["PublishResult"]["StorageSource"] == "URLDownload"


async def test_bad_requests_name_the_problem(make_node) -> None:
    rn: RunningNode = await make_node()
    r = await rn.http.post(
        "/api/v1/jobs", json={"Spec": {"Engine": "Dockr", "Resources": {"Memory": "12 potatoes"}}}
    )
    assert r.status_code == 400
    fields = {e["field"] for e in r.json()["errors"]}
    assert {"Spec.Engine", "Spec.Resources.Memory"} <= fields
    assert (
        await rn.http.post("/api/v1/compute/bid_accepted", json={"ExecutionID": "e-nope"})
    ).status_code == 404
    assert (await rn.http.get("/api/v1/jobs/nope")).status_code == 404
    assert (await rn.http.post("/api/v1/jobs", content=b"\xff\x00garbage")).status_code == 400


async def test_rejection_lists_every_reason(make_node) -> None:
    rn: RunningNode = await make_node()
    job = noop_job(cpu="3", NodeSelectors=[{"Key": "env", "Operator": "In", "Values": ["prod"]}],
                   Network={"Type": "Full"})  # fmt: skip
    r = await rn.http.post("/api/v1/jobs", json=job)
    assert r.status_code == 409, r.text
    reasons = " | ".join(r.json()["reasons"])
    assert "env" in reasons and "accept_networked_jobs" in reasons and "cpu" in reasons


async def test_four_one_cpu_jobs_on_two_cpus_never_run_more_than_two(make_node) -> None:
    rn: RunningNode = await make_node(engines={"noop": {"enabled": True, "delay": "0.6s"}})
    ids = []
    for _ in range(4):
        r = await rn.http.post("/api/v1/jobs", json=noop_job(cpu="1"))
        assert r.status_code == 201, r.text
        ids.append(r.json()["JobID"])
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, len(rn.node.compute.scheduler.running))
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    states = [(await rn.wait_job(j))["State"] for j in ids]
    watcher.cancel()
    assert states == ["Completed"] * 4
    assert peak == 2


async def test_bid_reservation_expires_and_rejection_frees_it(make_node) -> None:
    rn: RunningNode = await make_node(timeouts={"bid_expiry": "300ms"})
    ask = {"Job": noop_job(cpu="2"), "ShardIndexes": [0]}
    [a] = (await rn.http.post("/api/v1/compute/ask_for_bid", json=ask)).json()["ShardResponse"]
    [b] = (await rn.http.post("/api/v1/compute/ask_for_bid", json=ask)).json()["ShardResponse"]
    assert a["Accepted"] and b["Accepted"]  # one runs, one in the queue
    [c] = (await rn.http.post("/api/v1/compute/ask_for_bid", json=ask)).json()["ShardResponse"]
    assert not c["Accepted"] and "queue full" in c["Reason"]
    r = await rn.http.post(
        "/api/v1/compute/bid_rejected", json={"ExecutionID": a["ExecutionID"], "Justification": "x"}
    )
    assert r.json()["State"] == "Cancelled"
    expired = await rn.wait_execution(b["ExecutionID"], {"Cancelled"})
    assert "expired" in expired["History"][-1]["Comment"]
    assert rn.node.compute.scheduler.pending_usage.is_zero()


async def test_callbacks_survive_a_requester_that_is_down(make_node, callbacks: CallbackServer) -> None:
    rn: RunningNode = await make_node()
    callbacks.fail = True
    ask = {"Job": noop_job(), "ShardIndexes": [0], "CallbackURL": callbacks.url}
    [a] = (await rn.http.post("/api/v1/compute/ask_for_bid", json=ask)).json()["ShardResponse"]
    eid = a["ExecutionID"]
    await rn.http.post("/api/v1/compute/bid_accepted", json={"ExecutionID": eid})
    # The requester saw the callback and answered 503, twice: it is retried, not dropped.
    first, second = await callbacks.wait_refused("on_run_complete", eid, count=2, timeout_s=20)
    assert first == second and first["JobID"] == a["JobID"]
    assert set(first["RunCommandResult"]) >= {"stdout", "exitCode"}
    assert callbacks.received == []  # nothing was answered 200 yet
    callbacks.fail = False
    body = await callbacks.wait_for("on_run_complete", eid, timeout_s=20)
    assert body == first  # the same callback, delivered once the requester is back


async def test_cancel_a_running_execution(make_node, callbacks: CallbackServer) -> None:
    rn: RunningNode = await make_node(engines={"noop": {"enabled": True, "delay": "30s"}})
    ask = {"Job": noop_job(), "ShardIndexes": [0], "CallbackURL": callbacks.url}
    [a] = (await rn.http.post("/api/v1/compute/ask_for_bid", json=ask)).json()["ShardResponse"]
    eid = a["ExecutionID"]
    await rn.http.post("/api/v1/compute/bid_accepted", json={"ExecutionID": eid})
    await rn.wait_execution(eid, {"Running"})
    r = await rn.http.post("/api/v1/compute/cancel", json={"ExecutionID": eid, "Justification": "user asked"})
    assert r.status_code == 200 and r.json()["State"] == "Cancelled"
    await callbacks.wait_for("on_cancel_complete", eid)
    assert not rn.node.compute.tasks and not rn.node.compute.scheduler.running


async def test_token_guards_mutating_calls(make_node) -> None:
    rn: RunningNode = await make_node(api={"listen": "127.0.0.1:0", "token": "s3cret"})
    assert (await rn.http.post("/api/v1/jobs", json=NOOP_JOB)).status_code == 401
    ok = await rn.http.post("/api/v1/jobs", json=NOOP_JOB, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 201
    assert (await rn.http.get("/api/v1/node")).status_code == 401  # reads need it too


async def test_status_endpoints(make_node) -> None:
    rn: RunningNode = await make_node()
    assert (await rn.http.get("/healthz")).json() == {"status": "ok"}
    ready = await rn.http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["store"]["ok"]
    info = (await rn.http.get("/api/v1/node")).json()
    assert info["ID"] == TEST_NODE_ID and info["Labels"] == {"env": "test"} and "Noop" in info["Engines"]
    metrics = (await rn.http.get("/metrics")).text
    assert "computenode_queue_depth" in metrics
    page = (await rn.http.get("/")).text
    assert TEST_NODE_ID in page
    drained = await rn.http.post("/api/v1/node/drain", json={"Mode": "graceful"})
    assert drained.json()["Draining"] is True
    assert (await rn.http.get("/readyz")).status_code == 503
    assert (await rn.http.post("/api/v1/jobs", json=NOOP_JOB)).status_code == 409
    await rn.http.post("/api/v1/node/drain", json={"Mode": "off"})
    assert (await rn.http.get("/readyz")).status_code == 200


async def test_owned_job_retries_transient_failures_then_reports_error(make_node) -> None:
    rn: RunningNode = await make_node(engines={"noop": {"enabled": True, "error": "fetch timed out",
                                                        "error_retryable": True}})  # fmt: skip
    job_id = (await rn.http.post("/api/v1/jobs", json=NOOP_JOB)).json()["JobID"]
    body = await rn.wait_job(job_id)
    assert body["State"] == "Error"
    assert body["Shards"][0]["RunOutput"]["runnerError"] == "fetch timed out"
    attempts = (await rn.http.get(f"/api/v1/executions?job_id={job_id}")).json()["Executions"]
    assert sorted(e["Attempt"] for e in attempts) == [0, 1, 2]  # two retries, then it stops


async def test_owned_job_does_not_retry_its_own_failure(make_node) -> None:
    rn: RunningNode = await make_node(engines={"noop": {"enabled": True, "error": "bad spec"}})
    job_id = (await rn.http.post("/api/v1/jobs", json=NOOP_JOB)).json()["JobID"]
    assert (await rn.wait_job(job_id))["State"] == "Error"
    assert len((await rn.http.get(f"/api/v1/executions?job_id={job_id}")).json()["Executions"]) == 1


async def test_work_dirs_are_removed_after_publishing_and_kept_for_failures_when_asked(make_node) -> None:
    rn: RunningNode = await make_node()
    job_id = (await rn.http.post("/api/v1/jobs", json=NOOP_JOB)).json()["JobID"]
    shard = (await rn.wait_job(job_id))["Shards"][0]
    work = rn.node.data_dir / "executions" / shard["ExecutionId"]
    async with asyncio.timeout(10):  # removed right after Completed is stored
        while work.exists():
            await asyncio.sleep(0.02)

    keeper: RunningNode = await make_node(node={"id": "n-keep", "data_dir": str(rn.node.data_dir.parent / "keep")},
                                          engines={"noop": {"enabled": True, "error": "boom"}},
                                          retention={"keep_failed_for": "1h", "min_free_disk": "1Mi"})  # fmt: skip
    job_id = (await keeper.http.post("/api/v1/jobs", json=NOOP_JOB)).json()["JobID"]
    shard = (await keeper.wait_job(job_id))["Shards"][0]
    assert (keeper.node.data_dir / "executions" / shard["ExecutionId"] / "results" / "stdout").exists()


async def test_low_disk_stops_bidding_and_shows_in_readyz(make_node) -> None:
    rn: RunningNode = await make_node(retention={"min_free_disk": "1Pi"})
    ready = await rn.http.get("/readyz")
    assert ready.status_code == 503 and "below the threshold" in ready.json()["checks"]["disk"]["reason"]
    r = await rn.http.post("/api/v1/jobs", json=NOOP_JOB)
    assert r.status_code == 409 and any("disk" in reason for reason in r.json()["reasons"])
