"""computenode workers in a real Bacalhau v0.3.23 network: an unmodified Go requester (built by the
test bed), the Go `bacalhau` CLI, `computenode run` daemons, Docker and the test bed's kubo.

Each test gets a fresh requester (it keeps stale peers for minutes: docs/network.md).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from libp2p.peer.id import ID

from computenode.multiaddr import http_url
from computenode.network.host import load_or_make_key
from tests.network.requester import Requester
from tests.operations.daemon import OPS_NODE_ID, Daemon, free_port

BUSYBOX = "computenode-test/busybox:latest"


class Worker:
    """A `computenode run` daemon joined to `requester`, driven without blocking the loop."""

    def __init__(self, tmp: Path, name: str, ipfs_api: str, docker_host: str, requester: Requester,
                 **extra: Any) -> None:  # fmt: skip
        key = tmp / name / "libp2p.key"
        self.peer_id = str(ID.from_pubkey(load_or_make_key(key).public_key))
        port = free_port()
        network = {"enabled": True, "listen": [f"/ip4/127.0.0.1/tcp/{port}"], "peers": [requester.multiaddr],
                   "key_file": str(key), "node_info_interval": "2s", **extra.pop("network", {})}  # fmt: skip
        node = {"id": f"{OPS_NODE_ID}-{name}", **extra.pop("node", {})}  # two workers never reap each other's
        self.daemon = Daemon(tmp / name, ipfs_api, docker_host, node=node, network=network, **extra)

    async def start(self) -> None:
        await asyncio.to_thread(self.daemon.start)

    async def stop(self) -> None:
        await asyncio.to_thread(self.daemon.stop)

    async def kill(self) -> None:
        proc = self.daemon.proc
        assert proc is not None
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)

    async def get(self, path: str) -> Any:
        async with httpx.AsyncClient(timeout=10) as http:
            return (await http.get(self.daemon.url + path)).json()

    async def wait_connected(self, timeout_s: float = 30) -> None:
        """Until /readyz says a configured requester is connected."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            check = (await self.get("/readyz"))["checks"].get("network", {})
            if check.get("ok"):
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"worker not connected in {timeout_s} s: {check}\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.daemon.log_path.read_text(errors="replace")


@pytest.fixture
async def workers(
    tmp_path: Path, ipfs_api: str, docker_host: str
) -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    started: list[Worker] = []

    async def start(requester: Requester, name: str = "w1", **extra: Any) -> Worker:
        w = Worker(tmp_path, name, ipfs_api, docker_host, requester, **extra)
        started.append(w)
        await w.start()
        await w.wait_connected()
        return w

    yield start
    for w in started:
        await w.stop()


async def submit_when_ranked(requester: Requester, *args: str, timeout_s: float = 20) -> str:
    """Submit, retrying while the requester has not yet ranked the workers (their NodeInfo is
    gossiped every 2 s here): its answer then is "not enough nodes"."""
    deadline = time.monotonic() + timeout_s
    while True:
        rc, out, err = await requester.cli(args[0], "run", "--wait=false", "--id-only", *args[2:])
        if rc == 0:
            return out.strip().splitlines()[-1]
        if "not enough nodes" not in out or time.monotonic() > deadline:
            raise AssertionError(f"submit failed ({rc}): {out}{err}")
        await asyncio.sleep(0.5)


def executions(describe: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for shard in describe["State"]["Shards"].values() for e in shard.get("Executions") or []]


def padded_module(src: Path, dest: Path, size: int = 12_000) -> Path:
    """`src` with a custom section that makes it over 5 KiB: the requester then moves it into IPFS
    and the worker must fetch it from there, as with any real module."""
    payload = bytes([3]) + b"pad" + bytes(size)
    n, leb = len(payload), bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        leb.append(byte | (0x80 if n else 0))
        if not n:
            break
    dest.write_bytes(src.read_bytes() + b"\x00" + bytes(leb) + payload)
    return dest


async def test_docker_and_wasm_jobs_run_on_a_worker_and_publish_to_ipfs(
    requester: Requester, workers: Any, ipfs_api: str, wasm_modules_dir: Path, tmp_path: Path
) -> None:
    w = await workers(requester)
    rc, out, err = await requester.cli(
        "docker", "run", "--wait", "--id-only", BUSYBOX, "--", "echo", "hello-net"
    )
    assert rc == 0, out + err
    job_id = out.strip().splitlines()[-1]
    desc = await requester.wait_state(job_id, "Completed", timeout=30)
    (ex,) = executions(desc)
    assert ex["NodeId"] == w.peer_id
    assert ex["RunOutput"]["stdout"] == "hello-net\n" and ex["RunOutput"]["exitCode"] == 0
    cid = ex["PublishedResults"]["CID"]
    async with httpx.AsyncClient(base_url=http_url(ipfs_api), timeout=30) as kubo:
        listing = (await kubo.post("/api/v0/ls", params={"arg": cid})).json()
        names = {link["Name"] for obj in listing["Objects"] for link in obj["Links"]}
        assert "stdout" in names, listing
        stdout = await kubo.post("/api/v0/cat", params={"arg": f"{cid}/stdout"})
        assert stdout.text == "hello-net\n"

    module = padded_module(wasm_modules_dir / "hello.wasm", tmp_path / "hello-big.wasm")
    rc, out, err = await requester.cli("wasm", "run", "--wait", "--id-only", str(module))
    assert rc == 0, out + err
    desc = await requester.wait_state(out.strip().splitlines()[-1], "Completed", timeout=30)
    assert desc["Job"]["Spec"]["Wasm"]["EntryModule"]["StorageSource"] == "IPFS"  # moved by the requester
    (ex,) = executions(desc)
    assert ex["NodeId"] == w.peer_id and ex["RunOutput"]["stdout"] == "Hello, world!\n"
    status = (await w.get("/api/v1/node"))["Network"]
    assert status["Requesters"][requester.peer_id]["Bids"] == 2
    assert (
        f"/ip4/127.0.0.1/tcp/{requester.swarm_port}/p2p/{requester.peer_id}" == status["Peers"][0]["Address"]
    )
    # Only loopback was ever dialled: the requester advertises its other interfaces too.
    assert "192.0.2" not in w.log() and "fd00::" not in w.log()


async def test_selectors_and_resources_route_jobs_to_the_right_worker(
    requester: Requester, workers: Any
) -> None:
    a = await workers(requester, "a", node={"labels": {"tier": "a"}})
    b = await workers(requester, "b", node={"labels": {"tier": "b"}})
    for worker, tier in ((a, "a"), (b, "b")):
        job = await submit_when_ranked(
            requester, "docker", "run", "-s", f"tier={tier}", BUSYBOX, "--", "echo", tier
        )
        (ex,) = executions(await requester.wait_state(job, "Completed", timeout=30))
        assert ex["NodeId"] == worker.peer_id and ex["RunOutput"]["stdout"] == f"{tier}\n"
    rc, out, _ = await requester.cli(
        "docker", "run", "--wait=false", "-s", "tier=nobody", BUSYBOX, "--", "true"
    )
    assert rc == 1 and "not enough nodes to run job" in out
    job = await submit_when_ranked(
        requester,
        "docker",
        "run",
        "-s",
        "tier=a",
        "--cpu",
        "1",
        "--memory",
        "100Mb",
        BUSYBOX,
        "--",
        "echo",
        "sized",
    )
    (ex,) = executions(await requester.wait_state(job, "Completed", timeout=30))
    assert ex["NodeId"] == a.peer_id
    # More than a worker's job_max (its NodeInfo says 2 CPUs): no node ranks for it.
    rc, out, _ = await requester.cli(
        "docker", "run", "--wait=false", "-s", "tier=a", "--cpu", "8", BUSYBOX, "--", "true"
    )
    assert rc == 1 and "not enough nodes" in out


async def test_a_job_the_workers_policy_refuses_is_refused_with_its_reason(
    start_requester: Any, workers: Any
) -> None:
    # v0.3.23 logs a bid response, and so the worker's reason, only at debug level.
    requester = await start_requester(env={"LOG_LEVEL": "debug"})
    w = await workers(requester, job_selection={"locality": "anywhere", "probe_exec": "sh -c 'exit 3'"})
    job = await submit_when_ranked(requester, "docker", "run", BUSYBOX, "--", "echo", "never")
    deadline = time.monotonic() + 30
    while "probe_exec exited with code 3" not in requester.log_text() and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
    log = requester.log_text()
    assert "probe_exec exited with code 3" in log, log[
        -3000:
    ]  # v0.3.23 shows a worker's reason only in its log
    refusals = (await w.get("/api/v1/node"))["Network"]["RecentRefusals"]
    assert refusals[0]["JobID"] == job and "probe_exec exited with code 3" in refusals[0]["Reason"]
    # A refused offer stores nothing on the worker.
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(f"{w.daemon.url}/api/v1/jobs/{job}")).status_code == 404


async def test_concurrency_two_runs_on_both_workers_and_is_verified(
    requester: Requester, workers: Any
) -> None:
    a = await workers(requester, "a")
    b = await workers(requester, "b")
    job = await submit_when_ranked(
        requester,
        "docker",
        "run",
        "--concurrency",
        "2",
        "--verifier",
        "deterministic",
        BUSYBOX,
        "--",
        "echo",
        "same",
    )
    desc = await requester.wait_state(job, "Completed", timeout=40)
    done = executions(desc)
    assert {e["NodeId"] for e in done} == {a.peer_id, b.peer_id}
    assert all(e["State"] == "Completed" and e["RunOutput"]["stdout"] == "same\n" for e in done), done


@pytest.mark.timeout(300)
async def test_restarts_of_worker_and_requester(requester: Requester, workers: Any) -> None:
    w = await workers(requester)
    # Killed mid-job: after its restart the worker reports the failure to the requester.
    job = await submit_when_ranked(requester, "docker", "run", BUSYBOX, "--", "sleep", "60")
    deadline = time.monotonic() + 30
    while not [e for e in (await w.get("/api/v1/executions?state=Running"))["Executions"]]:
        assert time.monotonic() < deadline, "the job never ran"
        await asyncio.sleep(0.2)
    await w.kill()
    await w.start()
    await w.wait_connected()
    desc = await requester.wait_state(job, ("Error", "Cancelled", "Completed"), timeout=60)
    (ex,) = executions(desc)
    assert desc["State"]["State"] == "Error" and ex["State"] == "Failed", desc["State"]
    assert "restart" in (ex.get("Status") or ex["RunOutput"]["runnerError"] or ""), ex
    # Restarted while idle: it reconnects (same peer ID, from its key file) and takes the next job.
    await w.stop()
    await w.start()
    await w.wait_connected()
    job = await submit_when_ranked(requester, "docker", "run", BUSYBOX, "--", "echo", "again")
    (ex,) = executions(await requester.wait_state(job, "Completed", timeout=30))
    assert ex["NodeId"] == w.peer_id
    # The requester restarted: the worker redials it (every 10 s) and takes work again.
    await requester.restart()
    await w.wait_connected(timeout_s=40)
    job = await submit_when_ranked(requester, "docker", "run", BUSYBOX, "--", "echo", "after")
    (ex,) = executions(await requester.wait_state(job, "Completed", timeout=30))
    assert ex["NodeId"] == w.peer_id and ex["RunOutput"]["stdout"] == "after\n"
    assert os.path.exists(w.daemon.tmp / "libp2p.key")


async def test_labels_changed_by_sighup_reach_the_requester_at_once(
    requester: Requester, workers: Any
) -> None:
    # NodeInfo every hour: only the publication on connect and the one SIGHUP triggers can carry labels.
    w = await workers(requester, network={"node_info_interval": "1h"})
    job = await submit_when_ranked(requester, "docker", "run", "-s", "tier=one", BUSYBOX, "--", "echo", "one")
    await requester.wait_state(job, "Completed", timeout=30)
    rc, out, _ = await requester.cli("docker", "run", "--wait=false", "-s", "tier=two", BUSYBOX, "--", "true")
    assert rc == 1 and "not enough nodes" in out
    w.daemon.config["node"]["labels"] = {"tier": "two"}
    w.daemon.write_config()
    w.daemon.signal(signal.SIGHUP)
    job = await submit_when_ranked(
        requester, "docker", "run", "-s", "tier=two", BUSYBOX, "--", "echo", "two", timeout_s=10
    )
    (ex,) = executions(await requester.wait_state(job, "Completed", timeout=30))
    assert ex["NodeId"] == w.peer_id
