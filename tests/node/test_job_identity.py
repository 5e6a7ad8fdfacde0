"""A job ID names one job forever: submissions get the node's IDs, an offer cannot take over
another job's ID, the same offer again is answered alike, and a signed submit sent twice makes
one job."""

from __future__ import annotations

import asyncio
from typing import Any

from computenode.store import NotFound
from tests.requester.keys import client_id, client_key, signed_body

NOOP: dict[str, Any] = {"Engine": "Noop", "Publisher": "Noop"}


def offer(
    job_id: str, spec: dict[str, Any], callback: str, shards: list[int] | None = None
) -> dict[str, Any]:
    job = {"APIVersion": "V1beta1", "Metadata": {"ID": job_id}, "Spec": spec}
    return {"Job": job, "ShardIndexes": shards or [0], "CallbackURL": callback}


async def test_a_submission_gets_the_nodes_id_whatever_it_says(make_node: Any) -> None:
    rn = await make_node()
    first = await rn.http.post("/api/v1/jobs", json={"Metadata": {"ID": "victim"}, "Spec": NOOP})
    second = await rn.http.post("/api/v1/jobs", json={"ID": "victim", "Spec": NOOP})
    ids = {first.json()["JobID"], second.json()["JobID"]}
    assert len(ids) == 2 and "victim" not in ids
    assert (await rn.http.get("/api/v1/jobs/victim")).status_code == 404


async def test_an_offer_cannot_take_over_a_job_id(make_node: Any) -> None:
    rn = await make_node()
    alice, mallory = "http://127.0.0.1:9/alice", "http://127.0.0.1:9/mallory"
    resp = await rn.http.post("/api/v1/compute/ask_for_bid", json=offer("j-1", NOOP, alice))
    [bid] = resp.json()["ShardResponse"]
    assert bid["Accepted"], bid
    before = await rn.node.store.get_job("j-1")

    for body in (offer("j-1", NOOP, mallory), offer("j-1", {**NOOP, "Timeout": 7}, alice)):
        taken = await rn.http.post("/api/v1/compute/ask_for_bid", json=body)
        assert taken.status_code == 409, taken.text
        assert "job ID j-1 is already used on this node by another job" in taken.json()["reasons"][0]
    assert await rn.node.store.get_job("j-1") == before  # spec, owner and requester unchanged
    assert [e.id for e in await rn.node.store.executions(job_id="j-1")] == [bid["ExecutionID"]]

    # The same offer from the same requester: the execution it already has.
    again = await rn.http.post("/api/v1/compute/ask_for_bid", json=offer("j-1", NOOP, alice))
    assert again.json()["ShardResponse"] == [bid]


async def test_an_offer_cannot_reuse_an_owned_jobs_id(make_node: Any) -> None:
    rn = await make_node()
    owned = (await rn.http.post("/api/v1/jobs", json={"Spec": NOOP})).json()["JobID"]
    taken = await rn.http.post("/api/v1/compute/ask_for_bid", json=offer(owned, NOOP, "http://127.0.0.1:9/x"))
    assert taken.status_code == 409, taken.text
    rec = await rn.node.store.get_job(owned)
    assert rec.owned and rec.requester == ""


async def test_a_refused_offer_stores_nothing(make_node: Any) -> None:
    rn = await make_node()
    body = offer("j-refused", {"Engine": "Docker", "Docker": {"Image": "busybox"}}, "http://127.0.0.1:9/a")
    [bid] = (await rn.http.post("/api/v1/compute/ask_for_bid", json=body)).json()["ShardResponse"]
    assert not bid["Accepted"]
    try:
        await rn.node.store.get_job("j-refused")
    except NotFound:
        pass
    else:
        raise AssertionError("a refused offer stored its job")


async def test_a_signed_submit_sent_twice_makes_one_job(make_node: Any) -> None:
    rn = await make_node()
    key = await asyncio.to_thread(client_key, 0)  # RSA key generation: off the loop
    body = signed_body(
        key, {"ClientID": client_id(key), "Job": {"APIVersion": "V1beta1", "Spec": NOOP}}, "data"
    )
    first = await rn.http.post("/requester/submit", content=body)
    second = await rn.http.post("/requester/submit", content=body)
    assert first.status_code == second.status_code == 200, second.text
    job_id = first.json()["job"]["Metadata"]["ID"]
    assert second.json()["job"]["Metadata"]["ID"] == job_id
    assert [r.id for r in await rn.node.store.jobs(client_id=client_id(key))] == [job_id]
    # Another signed submission of the same job is a new job: only the same bytes are the same job.
    other = signed_body(
        key, {"ClientID": client_id(key), "Job": {"APIVersion": "V1beta1", "Spec": {**NOOP}, "x": 1}}, "data"
    )
    third = await rn.http.post("/requester/submit", content=other)
    assert third.json()["job"]["Metadata"]["ID"] != job_id
