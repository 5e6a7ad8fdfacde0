"""The Requester helper against the real Go requester (no compute node involved)."""

from __future__ import annotations

import time

import httpx

from tests import services
from tests.network.conftest import StartRequester
from tests.network.requester import Requester


async def test_requester_answers_restarts_with_the_same_peer_id(requester: Requester) -> None:
    assert requester.peer_id.startswith("Qm")  # RSA identity, as BACALHAU-NETWORK.md says
    assert requester.multiaddr == f"/ip4/127.0.0.1/tcp/{requester.swarm_port}/p2p/{requester.peer_id}"
    async with httpx.AsyncClient(timeout=5, trust_env=False) as client:
        info = (await client.get(f"http://127.0.0.1:{requester.api_port}/node_info")).json()
    assert info["PeerInfo"]["ID"] == requester.peer_id
    assert "host-id:" + requester.peer_id in requester.log_text()

    rc, out, err = await requester.cli("list")
    assert rc == 0, out + err

    peer_id, pid = requester.peer_id, requester.proc.pid if requester.proc else None
    started = time.monotonic()
    await requester.restart()
    assert requester.proc is not None and requester.proc.pid != pid
    assert requester.peer_id == peer_id
    rc, out, err = await requester.cli("list")
    assert rc == 0, out + err
    print(f"restart took {time.monotonic() - started:.2f}s")


async def test_a_job_without_workers_is_refused(requester: Requester) -> None:
    # No compute node: the submit fails at the requester (errors go to stdout, exit 1).
    rc, out, _ = await requester.cli(
        "docker", "run", "--wait=false", "--id-only", services.BUSYBOX_IMAGE, "--", "echo", "hi"
    )
    assert rc == 1
    assert "not enough nodes to run job" in out


async def test_two_requesters_and_stop(start_requester: StartRequester) -> None:
    started = time.monotonic()
    a = await start_requester()
    elapsed = time.monotonic() - started
    b = await start_requester()
    assert a.peer_id != b.peer_id
    assert {a.swarm_port, a.api_port}.isdisjoint({b.swarm_port, b.api_port})
    await a.stop()
    assert not a.running
    assert b.running
    print(f"requester start took {elapsed:.2f}s")


async def test_submit_describe_wait_state_with_a_go_worker(start_requester: StartRequester) -> None:
    # A Go hybrid (requester and compute) runs the job itself: the helper's job methods end to end.
    hybrid = await start_requester(node_type="requester,compute")
    job_id = await hybrid.submit("docker", "run", services.BUSYBOX_IMAGE, "--", "echo", "hi")
    done = await hybrid.wait_state(job_id, ["Completed", "Error"], timeout=60)
    assert done["State"]["State"] == "Completed", done
    (execution,) = done["State"]["Shards"]["0"]["Executions"]
    assert execution["NodeId"] == hybrid.peer_id
    assert execution["RunOutput"]["stdout"] == "hi\n"
    assert (await hybrid.describe(job_id))["Job"]["Metadata"]["ID"] == job_id
