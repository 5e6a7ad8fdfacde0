"""The pure parts of the network adapter: framing, NodeInfo, callback routing, the key, the config."""

from __future__ import annotations

import json
import stat
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

import pytest

from computenode.config import load_settings
from computenode.errors import SpecError
from computenode.model import ResourceUsageData
from computenode.network.host import DialOnlyConfigured, load_or_make_key, parse_peer
from computenode.network.wire import FrameError, NodeFacts, encode, node_info, read_one_json, with_routing

REQUESTER = "/ip4/127.0.0.1/tcp/11235/p2p/QmS4Xi1WZnhUXcL5JY5G7bVETqkXb3KED5r9fWxpp9pn51"


def chunks(*parts: bytes) -> Callable[[], Awaitable[bytes]]:
    """A stream's read(): each part, then b"" (EOF) for ever."""
    queue = list(parts)

    async def read() -> bytes:
        return queue.pop(0) if queue else b""

    return read


async def test_one_json_value_is_read_without_waiting_for_eof() -> None:
    # The requester writes its request and keeps its side open: the value is complete before EOF.
    body = json.dumps({"Job": {"Metadata": {"ID": "j-1"}}, "ShardIndexes": [0]}).encode()
    reads = 0

    async def read() -> bytes:
        nonlocal reads
        reads += 1
        if reads == 1:
            return body[:10]
        if reads == 2:
            return body[10:]
        raise AssertionError("read again after a complete value: it would wait for EOF")

    assert (await read_one_json(read))["ShardIndexes"] == [0]


async def test_a_character_split_between_chunks_is_joined() -> None:
    body = json.dumps({"Reason": "café"}, ensure_ascii=False).encode()
    cut = body.index("é".encode()) + 1  # inside the two bytes of é
    assert await read_one_json(chunks(body[:cut], body[cut:])) == {"Reason": "café"}


async def test_garbage_and_oversize_are_frame_errors() -> None:
    with pytest.raises(FrameError, match="not one JSON value"):
        await read_one_json(chunks(b"{not json"))
    with pytest.raises(FrameError, match="not one JSON value"):
        await read_one_json(chunks(b"\xff\xfe"))
    with pytest.raises(FrameError, match="larger than 100 bytes"):
        await read_one_json(chunks(b"[" + b"1," * 100), limit=100)


def test_node_info_has_the_fields_the_v0_3_23_requester_ranks_by() -> None:
    facts = NodeFacts(
        engines=["Docker", "Wasm"],
        labels={"tier": "gpu"},
        total=ResourceUsageData(2.0, 4 << 30, 10 << 30, 0),
        available=ResourceUsageData(1.5, 3 << 30, 10 << 30, 0),
        job_max=ResourceUsageData(1.0, 1 << 30, 5 << 30, 0),
        running=1,
        queued=2,
    )
    info = json.loads(encode(node_info("12D3KooWpeer", ["/ip4/127.0.0.1/tcp/1235"], facts)))
    assert info["NodeType"] == 1
    assert info["BacalhauVersion"]["major"] == "0" and info["BacalhauVersion"]["gitversion"] == "v0.3.23"
    # A Go time.Time: the requester drops a NodeInfo whose builddate does not parse (so no labels).
    assert datetime.fromisoformat(info["BacalhauVersion"]["builddate"])
    assert info["PeerInfo"] == {"ID": "12D3KooWpeer", "Addrs": ["/ip4/127.0.0.1/tcp/1235"]}
    assert info["Labels"] == {"tier": "gpu"}
    compute = info["ComputeNodeInfo"]
    assert compute["ExecutionEngines"] == ["Docker", "Wasm"]
    assert compute["MaxCapacity"] == {"CPU": 2.0, "Memory": 4 << 30, "Disk": 10 << 30, "GPU": 0}
    assert compute["AvailableCapacity"]["CPU"] == 1.5
    assert compute["MaxJobRequirements"]["Memory"] == 1 << 30
    assert (compute["RunningExecutions"], compute["EnqueuedExecutions"]) == (1, 2)


def test_callbacks_carry_the_peer_ids_the_requester_expects() -> None:
    stored = json.dumps({"ExecutionID": "e-1", "JobID": "j-1", "ShardIndex": 0, "Err": "boom"})
    sent = json.loads(with_routing(stored, "12D3KooWme", "QmRequester"))
    assert sent == {
        "SourcePeerID": "12D3KooWme",
        "TargetPeerID": "QmRequester",
        "ExecutionID": "e-1",
        "JobID": "j-1",
        "ShardIndex": 0,
        "Err": "boom",
    }


def test_the_key_is_made_once_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "state" / "libp2p.key"
    first = load_or_make_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_or_make_key(path)
    assert again.public_key.to_bytes() == first.public_key.to_bytes()  # same peer ID after a restart
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="is not a libp2p private key"):
        load_or_make_key(path)


def test_only_configured_addresses_of_configured_peers_are_kept(tmp_path: Path) -> None:
    # Identify teaches every address the requester has (other interfaces, private ranges, QUIC):
    # the node must dial only what network.peers says.
    peer, addr = parse_peer(REQUESTER)
    own = load_or_make_key(tmp_path / "k")
    from libp2p.peer.id import ID
    from multiaddr import Multiaddr

    own_id = ID.from_pubkey(own.public_key)
    store = DialOnlyConfigured(own_id, {peer: [addr]})
    learned = [Multiaddr("/ip4/192.0.2.2/tcp/11235"), Multiaddr("/ip6/fd00::2/tcp/11235"), addr]
    store.add_addrs(peer, learned, 600)
    assert store.addrs(peer) == [addr]
    stranger = ID.from_pubkey(load_or_make_key(tmp_path / "k2").public_key)
    store.add_addrs(stranger, [Multiaddr("/ip4/127.0.0.1/tcp/4001")], 600)
    assert store.addrs(stranger) == []


def test_network_config_names_the_wrong_field() -> None:
    s = load_settings(overrides={"network.enabled": True, "network.peers": [REQUESTER]})
    assert s.network.enabled and s.network.node_info_interval == 30.0
    with pytest.raises(SpecError, match=r"network.peers.*is not a peer multiaddr"):
        load_settings(overrides={"network.peers": ["/ip4/127.0.0.1/tcp/11235"]})
    with pytest.raises(SpecError, match=r"network.listen.*is not a TCP multiaddr"):
        load_settings(overrides={"network.listen": ["/ip4/127.0.0.1/udp/1235/quic"]})
    with pytest.raises(SpecError, match=r"network.node_info_interval"):
        load_settings(overrides={"network.node_info_interval": "0s"})


async def test_garbage_is_refused_at_once_not_at_eof() -> None:
    # The requester keeps its side open: waiting for EOF on garbage would hold the stream until the
    # read timeout.
    async def read() -> bytes:
        nonlocal calls
        calls += 1
        if calls == 1:
            return b'{"Job": nope'
        raise AssertionError("read again after garbage")

    calls = 0
    with pytest.raises(FrameError, match="not one JSON value"):
        await read_one_json(read)
    assert await read_one_json(chunks(b'{"Reason": "a long', b' one"}')) == {"Reason": "a long one"}
