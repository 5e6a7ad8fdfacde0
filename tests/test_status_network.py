"""`computenode status` of a node on a libp2p network: what the human output says of the "Network"
object of GET /api/v1/node, what --json passes through, and that a node without one reads as before."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from computenode import cli
from computenode.cli import STATUS_REFUSALS, main, network_lines
from tests.network_sample import REQ_A, REQ_B, SELF, STRANGER, sample_network
from tests.node.conftest import ON_A_NETWORK, RunningNode, make_node  # noqa: F401

AT = 1764480000.0  # 2025-11-30 05:20:00 UTC


def network(**extra: Any) -> dict[str, Any]:
    refusals = [
        {
            "At": AT + 60,
            "Peer": STRANGER,
            "JobID": "job-1",
            "Reason": f"peer {STRANGER} is not a configured requester (network.peers)",
        },
        {"At": AT, "Peer": REQ_A, "JobID": "job-0", "Reason": "no engine Docker\nsecond line"},
    ]
    return sample_network("dial refused\x1b[31m", refusals) | extra


def test_network_lines() -> None:
    assert network_lines(network()) == [
        f"network: peer {SELF}, accepts any requester no",
        "  listen: /ip4/127.0.0.1/tcp/1235, /ip4/10.0.0.5/tcp/1235",
        f"  requester /ip4/10.0.0.1/tcp/1235/p2p/{REQ_A}: connected yes; offers 7, bids 5, refused 2",
        f"  requester /ip4/10.0.0.2/tcp/1235/p2p/{REQ_B}: connected no"
        " (last error: dial refused\\x1b[31m); offers 0, bids 0, refused 0",
        f"  peer {STRANGER} (not configured): connected yes; offers 1, bids 0, refused 1",
        "  other connected peers: 2",
        "refusals (newest 2 of 2):",
        f"  2025-11-30 05:21:00  peer 12*cccccc  job job-1  peer {STRANGER} is not a configured requester"
        " (network.peers)",
        "  2025-11-30 05:20:00  peer Qm*aaaaaa  job job-0  no engine Docker\\nsecond line",
    ]


def test_network_lines_when_alone_and_with_many_refusals() -> None:
    alone = network(
        Peers=[], Connected=[], Requesters={}, RecentRefusals=[], Listen=[], AcceptAnyRequester=True
    )
    assert network_lines(alone) == [
        f"network: peer {SELF}, accepts any requester yes",
        "  listen: none",
        "  requesters: none configured",
        "  other connected peers: 0",
        "refusals: none",
    ]
    many = [{"At": AT + i, "Peer": REQ_A, "JobID": f"job-{i}", "Reason": "r"} for i in range(50)]
    lines = network_lines(network(RecentRefusals=many))
    assert f"refusals (newest {STATUS_REFUSALS} of 50):" in lines
    assert lines[-1].endswith(f"job job-{STATUS_REFUSALS - 1}  r")


class FakeClient:
    """What cmd_status asks of a NodeClient."""

    base_url = "http://node:1234"

    def __init__(self, info: dict[str, Any]) -> None:
        self.info = info

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def node(self) -> dict[str, Any]:
        return self.info

    def readyz(self) -> tuple[int, dict[str, Any]]:
        return 200, {"status": "ok", "checks": {"network": {"ok": True}}}

    def executions(self) -> list[dict[str, Any]]:
        return []


INFO = {"ID": "n-1", "Version": "1.0", "Engines": ["Wasm"], "Publishers": ["Local"], "Running": 0,
        "Enqueued": 0, "Draining": False, "Capacity": {}}  # fmt: skip
WITHOUT = [
    "node n-1 (computenode 1.0) at http://node:1234: ok",
    "  engines: Wasm; publishers: Local",
    "  running 0, enqueued 0, draining False",
    "  network: ok",
    "executions: none",
]


def status(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], info: dict[str, Any],
           *flags: str) -> str:  # fmt: skip
    monkeypatch.setattr(cli, "client", lambda args: FakeClient(info))
    assert main(["status", *flags]) == 0
    return capsys.readouterr().out


def test_status_without_network_is_unchanged(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert status(monkeypatch, capsys, INFO).splitlines() == WITHOUT
    assert "Network" not in json.loads(status(monkeypatch, capsys, INFO, "--json"))["Node"]


def test_status_with_network(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    net = network()
    out = status(monkeypatch, capsys, INFO | {"Network": net}).splitlines()
    assert out == [*WITHOUT[:-1], *network_lines(net), WITHOUT[-1]]
    assert "\x1b" not in "".join(out)
    assert (
        json.loads(status(monkeypatch, capsys, INFO | {"Network": net}, "--json"))["Node"]["Network"] == net
    )


async def test_status_of_a_node_on_the_network(make_node, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    # A real libp2p host in the node; the CLI's blocking HTTP calls run off the loop.
    rn: RunningNode = await make_node(network=ON_A_NETWORK)
    net = (await rn.http.get("/api/v1/node")).json()["Network"]
    assert await asyncio.to_thread(main, ["status", "--node", rn.url]) in (0, 1)
    out = capsys.readouterr().out
    assert f"network: peer {net['PeerID']}, accepts any requester yes" in out
    assert f"  listen: {', '.join(net['Listen'])}" in out and "/tcp/0" not in out
    assert "  requesters: none configured" in out and "refusals: none" in out
    assert await asyncio.to_thread(main, ["status", "--json", "--node", rn.url]) in (0, 1)
    assert json.loads(capsys.readouterr().out)["Node"]["Network"]["PeerID"] == net["PeerID"]


async def test_status_of_a_node_off_the_network(make_node, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    rn: RunningNode = await make_node()
    assert await asyncio.to_thread(main, ["status", "--node", rn.url]) in (0, 1)
    out = capsys.readouterr().out
    assert "network" not in out and "refusals" not in out and "executions" in out
