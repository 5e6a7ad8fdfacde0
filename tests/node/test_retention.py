"""Retention through the API: a deleted job's ID is refused to an offer (409), its signed
submission sent again names it as deleted (410) and makes no new job."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.node.test_job_identity import NOOP, offer
from tests.requester.keys import client_id, client_key, signed_body

LATER = 31 * 86400.0  # past the default retention.history_for (30d)


async def test_a_deleted_jobs_id_and_signed_submission_are_never_reused(make_node: Any) -> None:
    rn = await make_node()
    key = await asyncio.to_thread(client_key, 0)  # RSA key generation: off the loop
    body = signed_body(
        key, {"ClientID": client_id(key), "Job": {"APIVersion": "V1beta1", "Spec": NOOP}}, "data"
    )
    submitted = await rn.http.post("/requester/submit", content=body)
    job_id = submitted.json()["job"]["Metadata"]["ID"]
    assert (await rn.wait_job(job_id))["State"] == "Completed"
    bid_resp = await rn.http.post(
        "/api/v1/compute/ask_for_bid", json=offer("j-offered", NOOP, "http://127.0.0.1:9/a")
    )
    [bid] = bid_resp.json()["ShardResponse"]
    assert bid["Accepted"]
    await rn.node.compute.cancel(bid["ExecutionID"], "test")

    await rn.node._clean_disk()  # the first pass: orphans too
    assert rn.node.cleaner is not None
    swept = await rn.node.cleaner.run(now=time.time() + LATER)
    assert swept.jobs == 2
    assert (await rn.http.get(f"/api/v1/jobs/{job_id}")).status_code == 404

    again = await rn.http.post("/requester/submit", content=body)
    assert again.status_code == 410 and again.json()["JobID"] == job_id, again.text
    assert await rn.node.store.jobs(client_id=client_id(key)) == []
    for callback in ("http://127.0.0.1:9/a", "http://127.0.0.1:9/other"):
        reused = await rn.http.post("/api/v1/compute/ask_for_bid", json=offer("j-offered", NOOP, callback))
        assert reused.status_code == 409 and "never reused" in reused.json()["reasons"][0], reused.text
