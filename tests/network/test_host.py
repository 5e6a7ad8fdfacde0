"""The node's libp2p side against a py-libp2p requester stand-in (tests/network/peer.py): the same
compute code path as HTTP, refusals as answers, resets only for calls a peer may not make, and
callbacks over streams through the persisted queue."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from libp2p.peer.id import ID

from computenode.network.host import load_or_make_key
from tests.network.peer import StreamReset, TestPeer
from tests.operations.daemon import free_port

NOOP_JOB = {
    "APIVersion": "V1beta1",
    "Metadata": {"ID": "", "ClientID": "test"},
    "Spec": {"Engine": "Noop", "Verifier": "Noop", "Publisher": "Noop", "Deal": {"Concurrency": 1}},
}


def job(job_id: str) -> dict[str, Any]:
    return NOOP_JOB | {"Metadata": {"ID": job_id, "ClientID": "test"}}


class Worker:
    def __init__(self, tmp: Path) -> None:
        self.key = tmp / "worker.key"
        self.peer_id = str(ID.from_pubkey(load_or_make_key(self.key).public_key))
        self.port = free_port()
        self.addr = f"/ip4/127.0.0.1/tcp/{self.port}/p2p/{self.peer_id}"


@pytest.fixture
async def worker_and_peer(
    tmp_path: Path, make_node: Callable[..., Any]
) -> AsyncIterator[tuple[Any, TestPeer, Worker]]:
    w = Worker(tmp_path)
    peer = TestPeer(tmp_path / "peer.key", w.addr)
    await peer.start()
    try:
        rn = await make_node(
            network={
                "enabled": True,
                "listen": [f"/ip4/127.0.0.1/tcp/{w.port}"],
                "peers": [peer.addr],
                "key_file": str(w.key),
                "node_info_interval": "1s",
            }
        )
        async with asyncio.timeout(20):  # the worker dials its configured requester at start
            while peer.peer_id not in rn.node.network.connected:
                await asyncio.sleep(0.05)
        yield rn, peer, w
    finally:
        await peer.stop()


async def test_an_offer_runs_to_completion_with_callbacks_over_streams(worker_and_peer: Any) -> None:
    rn, peer, w = worker_and_peer
    answer = await peer.call("ask_for_bid", {"SourcePeerID": peer.peer_id, "TargetPeerID": w.peer_id,
                                             "Job": job("j-net-1"), "ShardIndexes": [0]})  # fmt: skip
    (shard,) = answer["ShardResponse"]
    assert shard["Accepted"] is True and shard["JobID"] == "j-net-1", shard
    eid = shard["ExecutionID"]
    # v0.3.23 never sets Accepted on bid_accepted: it must not matter.
    meta = await peer.call("bid_accepted", {"ExecutionID": eid, "Accepted": False})
    assert meta == {"ExecutionID": eid, "JobID": "j-net-1", "ShardIndex": 0}
    name, body = await peer.callback()
    assert name == "on_run_complete"
    assert (body["SourcePeerID"], body["TargetPeerID"], body["ExecutionID"]) == (w.peer_id, peer.peer_id, eid)
    assert body["RunCommandResult"]["exitCode"] == 0
    await peer.call("result_accepted", {"ExecutionID": eid})
    name, body = await peer.callback()
    assert name == "on_publish_complete" and body["ExecutionID"] == eid
    ex = (await rn.http.get(f"/api/v1/executions/{eid}")).json()
    assert ex["State"] == "Completed"
    # The same offer again returns the execution it made (the requester may resend it).
    again = await peer.call("ask_for_bid", {"Job": job("j-net-1"), "ShardIndexes": [0]})
    assert again["ShardResponse"][0]["ExecutionID"] == eid
    status = (await rn.http.get("/api/v1/node")).json()["Network"]
    assert status["PeerID"] == w.peer_id
    assert status["Requesters"][peer.peer_id] == {"Offers": 2, "Bids": 2, "Refused": 0, "Calls": 2}
    assert status["Peers"] == [{"Address": peer.addr, "Connected": True, "Error": ""}]
    metrics = (await rn.http.get("/metrics")).text
    assert 'computenode_offers_total{transport="libp2p"} 2.0' in metrics
    assert 'computenode_callbacks_total{outcome="delivered",transport="p2p"} 2.0' in metrics


async def test_node_info_is_gossiped_from_the_nodes_state(worker_and_peer: Any) -> None:
    _rn, peer, w = worker_and_peer
    info = await peer.node_info()
    assert info["PeerInfo"] == {
        "ID": w.peer_id,
        "Addrs": [f"/ip4/127.0.0.1/tcp/{w.port}"],
    }  # only what it listens on
    assert info["NodeType"] == 1 and info["Labels"] == {"env": "test"}
    compute = info["ComputeNodeInfo"]
    assert compute["ExecutionEngines"] == ["Noop", "Wasm"]  # usable now (Docker is disabled in these tests)
    assert compute["MaxCapacity"] == {"CPU": 2.0, "Memory": 2 << 30, "Disk": 10 << 30, "GPU": 0}
    assert compute["RunningExecutions"] == 0


async def test_a_refusal_is_an_answer_with_the_reason(worker_and_peer: Any) -> None:
    rn, peer, _w = worker_and_peer
    bad = job("j-net-bad") | {"Spec": {"Engine": "Noop", "Deal": {"Concurrency": 1}, "Timeout": -5}}
    answer = await peer.call("ask_for_bid", {"Job": bad, "ShardIndexes": [0, 1]})
    assert [s["ShardIndex"] for s in answer["ShardResponse"]] == [0, 1]
    for shard in answer["ShardResponse"]:
        assert shard["Accepted"] is False and "Timeout" in shard["Reason"], shard
    over = job("j-net-big") | {"Spec": NOOP_JOB["Spec"] | {"Resources": {"CPU": "64"}}}
    (shard,) = (await peer.call("ask_for_bid", {"Job": over, "ShardIndexes": [0]}))["ShardResponse"]
    assert shard["Accepted"] is False and "cpu" in shard["Reason"].lower(), shard
    refusals = (await rn.http.get("/api/v1/node")).json()["Network"]["RecentRefusals"]
    assert refusals[0]["JobID"] == "j-net-big" and refusals[0]["Peer"] == peer.peer_id
    assert (await rn.http.get("/api/v1/jobs/j-net-big")).status_code == 404  # a refusal stores nothing


async def test_garbage_and_unknown_executions_reset_the_stream_only(worker_and_peer: Any) -> None:
    _rn, peer, _w = worker_and_peer
    with pytest.raises(StreamReset):
        await peer.call("ask_for_bid", None, raw=b"{this is not json}")
    with pytest.raises(StreamReset):
        await peer.call("bid_accepted", {"ExecutionID": "e-nobody"})
    with pytest.raises(StreamReset):
        await peer.call("ask_for_bid", {"Job": job("j-x"), "ShardIndexes": [0, 0]})
    # The connection and the node are fine after each.
    answer = await peer.call("ask_for_bid", {"Job": job("j-net-after"), "ShardIndexes": [0]})
    assert answer["ShardResponse"][0]["Accepted"] is True


async def test_a_peer_that_is_not_configured_is_refused_and_cannot_touch_others(
    worker_and_peer: Any, tmp_path: Path
) -> None:
    rn, peer, w = worker_and_peer
    (mine,) = (await peer.call("ask_for_bid", {"Job": job("j-net-own"), "ShardIndexes": [0]}))[
        "ShardResponse"
    ]
    stranger = TestPeer(tmp_path / "stranger.key", w.addr)
    await stranger.start()
    try:
        await stranger.connect()
        (shard,) = (await stranger.call("ask_for_bid", {"Job": job("j-net-s"), "ShardIndexes": [0]}))[
            "ShardResponse"
        ]
        assert shard["Accepted"] is False
        assert shard["Reason"] == f"peer {stranger.peer_id} is not a configured requester (network.peers)"
        # Another requester's execution: neither accepted nor cancelled by this peer.
        for call in ("bid_accepted", "cancel"):
            with pytest.raises(StreamReset):
                await stranger.call(call, {"ExecutionID": mine["ExecutionID"], "Justification": "mine now"})
        ex = (await rn.http.get(f"/api/v1/executions/{mine['ExecutionID']}")).json()
        assert ex["State"] == "Created"
    finally:
        await stranger.stop()


async def test_readyz_is_degraded_while_no_configured_requester_is_connected(
    tmp_path: Path, make_node: Callable[..., Any]
) -> None:
    w = Worker(tmp_path)
    gone = TestPeer(tmp_path / "gone.key", w.addr)  # never started: nothing listens at its address
    addr = f"/ip4/127.0.0.1/tcp/{free_port()}/p2p/{gone.peer_id}"
    rn = await make_node(network={"enabled": True, "listen": [f"/ip4/127.0.0.1/tcp/{w.port}"],
                                  "peers": [addr], "key_file": str(w.key)})  # fmt: skip
    async with asyncio.timeout(20):
        while True:
            body = (await rn.http.get("/readyz")).json()
            check = body["checks"].get("network", {})
            if not check.get("ok", True) and "(" in check.get("reason", ""):
                break
            await rn.node.health.refresh()
    assert body["status"] == "degraded"
    assert check["reason"].startswith("no configured requester is connected")
    assert gone.peer_id in check["reason"]
    info = (await rn.http.get("/api/v1/node")).json()["Network"]
    assert info["Peers"][0]["Connected"] is False and info["Peers"][0]["Error"]


def test_nodeinfo_json_is_what_go_parses() -> None:
    # Field names and types of model.NodeInfo (v0.3.23): NodeType an integer, engines by name.
    from computenode.model import ResourceUsageData
    from computenode.network.wire import NodeFacts, encode, node_info

    z = ResourceUsageData()
    info = json.loads(encode(node_info("p", [], NodeFacts(["Wasm"], {}, z, z, z, 0, 0))))
    assert set(info) == {"BacalhauVersion", "PeerInfo", "NodeType", "Labels", "ComputeNodeInfo"}


async def test_a_listen_address_in_use_stops_the_start_with_the_reason(
    tmp_path: Path, make_node: Callable[..., Any]
) -> None:
    import socket

    from computenode.errors import DependencyDown

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            DependencyDown, match=r"network: cannot listen on every address of network.listen"
        ):
            await make_node(network={"enabled": True, "listen": [f"/ip4/127.0.0.1/tcp/{port}"]})


async def test_a_libp2p_host_that_ends_is_started_again(worker_and_peer: Any) -> None:
    rn, peer, w = worker_and_peer
    network = rn.node.network
    await network.bridge.stop()  # as if py-libp2p's thread had died
    async with asyncio.timeout(30):
        while not (network.bridge.ended.done() is False and peer.peer_id in network.connected):
            await asyncio.sleep(0.1)
    assert network.peer_id == w.peer_id  # the same key
    answer = await peer.call("ask_for_bid", {"Job": job("j-net-again"), "ShardIndexes": [0]})
    assert answer["ShardResponse"][0]["Accepted"] is True
