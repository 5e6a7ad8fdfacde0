"""The daemon as an operator meets it: signals, restarts, systemd, reload, drain, logs."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.node.conftest import CallbackServer
from tests.operations.daemon import COMPUTENODE, OPS_NODE_ID, REPO, Daemon

BUSYBOX = "computenode-test/busybox:latest"


def docker_job(*cmd: str) -> dict[str, object]:
    return {
        "Spec": {
            "Engine": "Docker",
            "Publisher": "Local",
            "Docker": {"Image": BUSYBOX, "Entrypoint": list(cmd)},
        }
    }


def noop_job() -> dict[str, object]:
    return {"Spec": {"Engine": "Noop", "Publisher": "Local"}}


def containers_of(node_id: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=io.computenode.node={node_id}"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout.split()


@pytest.fixture
def daemon(tmp_path: Path, ipfs_api: str, docker_host: str):
    made: list[Daemon] = []

    def make(**extra: object) -> Daemon:
        d = Daemon(tmp_path / f"d{len(made)}", ipfs_api, docker_host, **extra)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()
        for cid in containers_of(d.config["node"]["id"]):
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True)


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (
        (REPO / "systemd" / "computenode.service")
        .read_text()
        .replace("/usr/local/bin/computenode", COMPUTENODE)
    )
    path = tmp_path / "computenode.service"
    path.write_text(unit)
    out = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for key in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "KillMode=mixed",
        "ExecReload=/bin/kill -HUP",
    ):
        assert key in unit


def test_notify_ready_status_watchdog_stopping(daemon, tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(15)
    d = daemon()
    d.start(env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "1000000"}, wait=False)
    messages: list[str] = []
    try:
        while not any("WATCHDOG=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        assert any("READY=1" in m for m in messages)
        assert any("STATUS=running 0" in m for m in messages)
        d.signal(signal.SIGTERM)
        while not any("STOPPING=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        assert d.wait_exit() == 0
    finally:
        sock.close()


def test_sighup_reloads_labels(daemon) -> None:
    d = daemon()
    d.start()
    assert d.get("/api/v1/node").json()["Labels"] == {"tier": "one"}
    d.config["node"]["labels"] = {"tier": "two"}
    d.config["api"]["token"] = "changed"  # not live-safe: logged as needing a restart
    d.write_config()
    d.signal(signal.SIGHUP)
    d.wait_for("/api/v1/node", lambda n: n["Labels"] == {"tier": "two"})
    assert "need a restart" in d.log_path.read_text()
    assert d.post("/api/v1/jobs", noop_job()).status_code == 201  # the token was not applied live


def test_sigterm_drains_and_reports_every_execution(daemon) -> None:
    import asyncio

    async def scenario() -> None:
        cb = CallbackServer()
        await cb.start()
        d = daemon(engines={"noop": {"enabled": True, "delay": "60s"}})
        await asyncio.to_thread(d.start)  # Daemon's calls block: threads, so cb keeps answering
        try:
            async with httpx.AsyncClient(base_url=d.url) as http:
                ask = {"Job": noop_job(), "ShardIndexes": [0], "CallbackURL": cb.url}
                [a] = (await http.post("/api/v1/compute/ask_for_bid", json=ask)).json()["ShardResponse"]
                await http.post("/api/v1/compute/bid_accepted", json={"ExecutionID": a["ExecutionID"]})
            d.signal(signal.SIGTERM)
            await cb.wait_for("on_cancel_complete", a["ExecutionID"], timeout_s=20)
            assert await asyncio.to_thread(d.wait_exit) == 0
        finally:
            await cb.stop()

    asyncio.run(scenario())


def test_drain_api_fast_and_off_survives_restart(daemon) -> None:
    d = daemon(engines={"noop": {"enabled": True, "delay": "60s"}})
    d.start()
    job_id = d.post("/api/v1/jobs", noop_job()).json()["JobID"]
    d.wait_for(f"/api/v1/jobs/{job_id}", lambda j: j["Shards"] and j["Shards"][0]["State"] == "Running")
    assert d.post("/api/v1/node/drain", {"Mode": "fast"}).json()["Draining"] is True
    d.wait_for(f"/api/v1/jobs/{job_id}", lambda j: j["State"] == "Cancelled")
    assert d.post("/api/v1/jobs", noop_job()).status_code == 409
    d.stop()
    d.start()
    assert d.get("/api/v1/node").json()["Draining"] is True
    assert d.get("/readyz").status_code == 503
    d.post("/api/v1/node/drain", {"Mode": "off"})
    assert d.get("/readyz").status_code == 200


def test_kill_9_then_restart_leaves_nothing_active_or_orphaned(daemon) -> None:
    import asyncio

    async def scenario() -> None:
        cb = CallbackServer()
        await cb.start()
        d = daemon()
        # Daemon's calls and containers_of block: threads, so cb keeps answering.
        await asyncio.to_thread(d.start)
        try:
            ask = {"Job": docker_job("sleep", "60"), "ShardIndexes": [0], "CallbackURL": cb.url}
            [a] = (await asyncio.to_thread(d.post, "/api/v1/compute/ask_for_bid", ask)).json()[
                "ShardResponse"
            ]
            assert a["Accepted"], a
            await asyncio.to_thread(d.post, "/api/v1/compute/bid_accepted", {"ExecutionID": a["ExecutionID"]})
            eid_path = f"/api/v1/executions/{a['ExecutionID']}"
            await asyncio.to_thread(d.wait_for, eid_path, lambda e: e["State"] == "Running")
            deadline = time.monotonic() + 20
            while not await asyncio.to_thread(containers_of, OPS_NODE_ID) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert await asyncio.to_thread(containers_of, OPS_NODE_ID), "the job's container never appeared"
            d.signal(signal.SIGKILL)
            await asyncio.to_thread(d.wait_exit)
            await asyncio.to_thread(d.start)
            ex = await asyncio.to_thread(d.wait_for, eid_path, lambda e: e["State"] == "Failed")
            assert "node restarted" in ex["History"][-1]["Comment"]
            running = await asyncio.to_thread(d.get, "/api/v1/executions?state=Running")
            assert running.json()["Executions"] == []
            await cb.wait_for("on_compute_failure", a["ExecutionID"], timeout_s=20)
            deadline = time.monotonic() + 20
            while await asyncio.to_thread(containers_of, OPS_NODE_ID) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert await asyncio.to_thread(containers_of, OPS_NODE_ID) == []
        finally:
            await cb.stop()

    asyncio.run(scenario())


def test_logs_follow_streams_a_running_job(daemon) -> None:
    d = daemon()
    d.start()
    job = docker_job("sh", "-c", "for i in 1 2 3 4 5; do echo line$i; sleep 0.3; done")
    job_id = d.post("/api/v1/jobs", job).json()["JobID"]
    shard = d.wait_for(
        f"/api/v1/jobs/{job_id}", lambda j: j["Shards"] and j["Shards"][0]["State"] == "Running"
    )
    eid = shard["Shards"][0]["ExecutionId"]
    chunks: list[bytes] = []
    with httpx.stream("GET", f"{d.url}/api/v1/executions/{eid}/logs?follow=true", timeout=30) as resp:
        for chunk in resp.iter_bytes():
            chunks.append(chunk)
    text = b"".join(chunks).decode()
    assert [line for line in text.split("\n") if line] == [f"line{i}" for i in range(1, 6)]
    assert len(chunks) > 1  # streamed as it ran, not in one piece at the end


def test_second_sigterm_skips_the_grace(daemon) -> None:
    d = daemon(engines={"noop": {"enabled": True, "delay": "120s"}}, timeouts={"drain_grace": "120s"})
    d.start()
    job_id = d.post("/api/v1/jobs", noop_job()).json()["JobID"]
    d.wait_for(f"/api/v1/jobs/{job_id}", lambda j: j["Shards"] and j["Shards"][0]["State"] == "Running")
    d.signal(signal.SIGTERM)
    time.sleep(0.5)
    assert d.proc is not None and d.proc.poll() is None  # draining: the job has 120 s
    d.signal(signal.SIGTERM)
    assert d.wait_exit(timeout_s=20) == 0
    d.start()
    assert d.get(f"/api/v1/jobs/{job_id}").json()["State"] == "Cancelled"


def test_two_nodes_on_one_data_dir_the_second_refuses(daemon) -> None:
    first = daemon()
    first.start()
    data_dir = first.config["node"]["data_dir"]
    db = Path(data_dir) / "computenode.db"
    before = db.stat().st_mtime_ns
    second = daemon(node={"id": "n-ops-2", "data_dir": data_dir})
    second.start(wait=False)
    assert second.wait_exit() == 1
    assert first.proc is not None
    assert f"data_dir {data_dir} is in use by pid {first.proc.pid}" in second.log_path.read_text()
    assert db.stat().st_mtime_ns == before  # refused before it touched the store
    assert first.get("/healthz").status_code == 200
    # The claim dies with its process, kill -9 included: a restart is never blocked by a stale file.
    first.signal(signal.SIGKILL)
    first.wait_exit()
    second.start()
    assert second.get("/api/v1/node").json()["ID"] == "n-ops-2"


def test_data_dir_is_private_to_the_node(daemon) -> None:
    d = daemon()
    data = Path(d.config["node"]["data_dir"])
    data.mkdir(parents=True)
    data.chmod(0o755)
    d.start()
    assert data.stat().st_mode & 0o777 == 0o700
    assert (data / "computenode.pid").stat().st_mode & 0o777 == 0o600
    for name in ("computenode.db", "computenode.db-wal", "computenode.db-shm"):
        assert (data / name).stat().st_mode & 0o777 == 0o600, name


def test_restart_removes_the_previous_runs_containers_whatever_their_age(daemon) -> None:
    """kill -9 with a running container and a long reap_grace, plus a container that was only
    created: the next start removes both before it retries anything."""
    from computenode.executors.docker_config import EXECUTION, MANAGED, NODE

    d = daemon(engines={"docker": {"reap_grace": "1h", "reap_interval": "1h"}})
    d.start()
    created = d.post("/api/v1/jobs", docker_job("sleep", "60")).json()
    eid = created["Executions"][0]["ExecutionID"]
    d.wait_for(f"/api/v1/executions/{eid}", lambda e: e["State"] == "Running")
    deadline = time.monotonic() + 20
    while not containers_of(OPS_NODE_ID) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert containers_of(OPS_NODE_ID), "the job's container never appeared"
    labels = [f"{MANAGED}=1", f"{NODE}={OPS_NODE_ID}", f"{EXECUTION}=e-never-started"]
    subprocess.run(["docker", "create", *(a for lb in labels for a in ("--label", lb)), BUSYBOX, "true"],
                   capture_output=True, check=True)  # fmt: skip
    d.signal(signal.SIGKILL)
    d.wait_exit()
    before = set(containers_of(OPS_NODE_ID))
    assert len(before) == 2
    d.start()  # ready only once start-up has reaped and reconciled
    assert before.isdisjoint(containers_of(OPS_NODE_ID))  # the retry may have made its own by now
    ex = d.get(f"/api/v1/executions/{eid}").json()
    assert ex["State"] == "Failed" and "node restarted" in ex["Comment"]
