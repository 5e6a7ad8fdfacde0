"""The dashboard as a person sees it: rendered by headless Chromium while an execution runs."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from computenode.api.base import Capacity
from computenode.api.dashboard import REFUSALS, network_section, peer_of, short_peer, transport_of
from computenode.api.dashboard import render as render_page
from computenode.model import ResourceUsageData
from computenode.store.execution import Page
from tests.network_sample import REQ_A, REQ_B, STRANGER, sample_network
from tests.node.conftest import ON_A_NETWORK, RunningNode

if TYPE_CHECKING:
    from computenode.api.base import NodeView

REPO = Path(__file__).resolve().parents[2]

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed: run scripts/testbed.sh up (it installs Debian's chromium)")
    return path


async def render(url: str, screenshot: Path) -> str:
    with tempfile.TemporaryDirectory() as profile:
        flags = [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
        shot = await asyncio.create_subprocess_exec(
            chromium(), *flags, f"--screenshot={screenshot}", "--window-size=1200,900", url,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        await asyncio.wait_for(shot.wait(), 60)
        dom = await asyncio.create_subprocess_exec(
            chromium(),
            *flags,
            "--dump-dom",
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await asyncio.wait_for(dom.communicate(), 60)
    return out.decode()


async def test_dashboard_shows_node_and_running_execution(make_node, tmp_path: Path) -> None:
    rn: RunningNode = await make_node(engines={"noop": {"enabled": True, "delay": "60s"}})
    job_id = (await rn.http.post("/api/v1/jobs", json={"Spec": {"Engine": "Noop"}})).json()["JobID"]
    [ex] = (await rn.http.get(f"/api/v1/executions?job_id={job_id}")).json()["Executions"]
    await rn.wait_execution(ex["ExecutionID"], {"Running"})
    # A finished job too, published by the local publisher: its row links to the results.
    hello = (REPO / "examples" / "hello-wasm.yaml").read_bytes()
    done_id = (await rn.http.post("/api/v1/jobs", content=hello)).json()["JobID"]
    assert (await rn.wait_job(done_id))["State"] == "Completed"
    [done] = (await rn.http.get(f"/api/v1/executions?job_id={done_id}")).json()["Executions"]
    shot = tmp_path / "dashboard.png"
    dom = await render(rn.url + "/", shot)
    assert "n-test" in dom and ex["ExecutionID"] in dom and "Running" in dom
    assert shot.exists() and shot.stat().st_size > 1000
    # Units and words, not raw numbers and Python booleans.
    assert "2 cores" in dom and "2.0 GiB" in dom and "10.0 GiB" in dom
    assert "Draining no" in dom and "False" not in dom and "True" not in dom
    # The running execution's latest progress, from the event bus.
    assert "<b>running</b>" in dom
    # Links to logs and results.
    eid, did = ex["ExecutionID"], done["ExecutionID"]
    assert f'href="/api/v1/executions/{eid}/logs"' in dom
    assert f'href="/api/v1/executions/{eid}/logs?stream=stderr"' in dom
    results = done["PublishedResults"]["URL"]
    assert results and f'href="{results}"' in dom
    assert (await rn.http.get(f"/api/v1/executions/{did}/logs")).text == "hello from wasm\n"
    # Readable without JavaScript: the node sends none.
    page = (await rn.http.get("/")).text
    assert "<script" not in page.lower()
    await rn.http.post(f"/api/v1/jobs/{job_id}/cancel")


# -- the Network section, rendered from a node view -------------------------------------------------

HOSTILE = "<script>alert('x')</script>&"


def network(**extra: Any) -> dict[str, Any]:
    refusals = [
        {
            "At": time.time() - 200,
            "Peer": STRANGER,
            "JobID": "job-1",
            "Reason": f"peer {STRANGER} is not a configured requester (network.peers) {HOSTILE}",
        },
        {"At": time.time() - 400, "Peer": REQ_A, "JobID": "job-0", "Reason": "no engine Docker"},
    ]
    return sample_network("dial refused " + HOSTILE, refusals) | extra


class FakeEvents:
    def latest_progress(self, execution_id: str) -> dict[str, Any] | None:
        return None


class FakeNode:
    """What render() reads of a NodeView: an idle node, with or without a network."""

    node_id, labels, draining, events = "n-fake", {"env": "test"}, False, FakeEvents()

    def __init__(self, net: dict[str, Any] | None) -> None:
        self.net = net

    def network_status(self) -> dict[str, Any] | None:
        return self.net

    def capacity(self) -> Capacity:
        total = ResourceUsageData(cpu=2, memory=2 * 2**30, disk=10 * 2**30)
        zero = ResourceUsageData()
        return Capacity(total, total, zero, zero, total, 0, 0)

    async def active_executions(self, limit: int) -> list[Any]:
        return []

    async def execution_page(self, limit: int) -> Page[Any]:
        return Page([], None)


READY = (200, {"status": "ok", "checks": {"network": {"ok": True}}})


async def page(net: dict[str, Any] | None) -> str:
    return await render_page(cast("NodeView", FakeNode(net)), cast("tuple[int, dict[str, object]]", READY))


async def test_no_network_no_section() -> None:
    html = await page(None)
    assert "Network" not in html and "Peer ID" not in html and "<h2>Dependencies</h2>" in html


async def test_network_section_shows_peers_counts_and_refusals() -> None:
    html = await page(network())
    section = html[html.index("<h2 id=network>") : html.index("<h2>Dependencies</h2>")]
    assert "12D3KooWSelfDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDddd" in section
    assert "<code>/ip4/127.0.0.1/tcp/1235</code>, <code>/ip4/10.0.0.5/tcp/1235</code>" in section
    assert "Accepts any requester no" in section
    # Connected: A, the stranger and one more; A is configured, so two others.
    assert "Other connected peers 2" in section
    rows = {r.split("</code>")[0]: r for r in section.split("<tr><td><code>")[1:]}
    a, b, s = rows[REQ_A], rows[REQ_B], rows[STRANGER]
    assert "<td>yes</td><td class=ok>yes</td><td>7</td><td>5</td><td>2</td><td>9</td>" in a
    assert "<td><code>/ip4/10.0.0.1/tcp/1235</code></td><td>-</td>" in a
    assert "<td>yes</td><td class=bad>no</td><td>0</td><td>0</td><td>0</td><td>0</td>" in b
    assert "<td><code>/ip4/10.0.0.2/tcp/1235</code></td>" in b
    assert "dial refused &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;" in b
    # A peer that made offers without being configured (accept_any_requester, or refused).
    assert "<td>no</td><td class=ok>yes</td><td>1</td><td>0</td><td>1</td><td>0</td><td>-</td><td>-</td>" in s
    # Refusals newest first, with a time people read, the short peer ID and the full one on hover.
    assert section.index("job-1") < section.index("job-0")
    assert "(3m 20s ago)</td>" in section and "(6m 40s ago)" in section and " UTC " in section
    assert f"<code title='{STRANGER}'>12*cccccc</code>" in section
    assert "not a configured requester (network.peers) &lt;script&gt;" in section
    # Nothing from outside gets through unescaped, and booleans are words.
    assert "<script" not in html and "True" not in html and "False" not in html


async def test_network_section_when_alone() -> None:
    net = network(
        Peers=[], Connected=[], Requesters={}, RecentRefusals=[], Listen=[], AcceptAnyRequester=True
    )
    section = network_section(net)
    assert "Listening on (nothing)" in section and "Accepts any requester yes" in section
    assert "Other connected peers 0" in section
    assert "None configured, none seen." in section and "<h3>Recent refusals</h3><p>None.</p>" in section


def test_refusals_are_capped_and_say_so() -> None:
    many = [{"At": time.time(), "Peer": REQ_A, "JobID": f"job-{i}", "Reason": "r"} for i in range(50)]
    section = network_section(network(RecentRefusals=many))
    assert f"Recent refusals (newest {REFUSALS} of 50)" in section
    assert f"job-{REFUSALS - 1}<" in section and f"job-{REFUSALS}<" not in section


def test_peer_helpers() -> None:
    assert peer_of(f"/ip4/1.2.3.4/tcp/1/p2p/{REQ_A}") == REQ_A
    assert peer_of(f"/ip4/1.2.3.4/tcp/1/ipfs/{REQ_A}/") == REQ_A
    assert peer_of("/ip4/1.2.3.4/tcp/1") == ""
    assert transport_of(f"/ip4/1.2.3.4/tcp/1/p2p/{REQ_A}") == "/ip4/1.2.3.4/tcp/1"
    assert transport_of(f"/dns4/r.example/tcp/1/ipfs/{REQ_A}/") == "/dns4/r.example/tcp/1"
    assert transport_of("/ip4/1.2.3.4/tcp/1") == "/ip4/1.2.3.4/tcp/1"
    assert short_peer(REQ_A) == "Qm*aaaaaa" and short_peer("QmShort") == "QmShort"


async def test_dashboard_of_a_node_on_the_network(make_node) -> None:
    # A real libp2p host in the node: the section shows its peer ID and where it listens.
    rn: RunningNode = await make_node(network=ON_A_NETWORK)
    info = (await rn.http.get("/api/v1/node")).json()["Network"]
    page = (await rn.http.get("/")).text
    assert f"<code id=peer-id>{info['PeerID']}</code>" in page
    assert info["Listen"] and all(f"<code>{a}</code>" in page for a in info["Listen"])
    assert "Accepts any requester yes" in page and "<script" not in page.lower()


async def test_dashboard_of_a_node_off_the_network(make_node) -> None:
    rn: RunningNode = await make_node()
    page = (await rn.http.get("/")).text
    assert "Network" not in page and "Peer ID" not in page
