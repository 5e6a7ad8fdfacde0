"""HTTP probes against a real aiohttp server on 127.0.0.1 and exec probes running real bash scripts."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path

import httpx
import psutil
import pytest
from bidhelpers import Facts, limits, make_job

from computenode.bidding import Bidder, Verdict
from computenode.config import JobSelectionConfig, TimeoutsConfig
from computenode.shards import ShardPlans


async def probe(b: Bidder, name: str) -> Verdict:
    return {v.name: v for v in await b.evaluate(make_job(Timeout=30))}[name]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
    return str(path)


# -- HTTP probe --------------------------------------------------------------------------------


async def test_http_200_bids_and_gets_the_payload(bidder, probe_server) -> None:
    b = bidder(probe_http=f"{probe_server.url}/ok")
    v = await probe(b, "probe_http")
    assert v.ok, v
    [sent] = probe_server.received
    assert sent["node_id"] == "node-1" and sent["job_id"] == "job-1"
    assert sent["spec"]["Docker"]["Image"] == "busybox" and sent["spec"]["Timeout"] == 30
    assert sent["execution_plan"] == {"ShardsTotal": 0}


async def test_http_500_does_not_bid(bidder, probe_server) -> None:
    v = await probe(bidder(probe_http=f"{probe_server.url}/error"), "probe_http")
    assert not v.ok and "answered status 500" in v.reason and "probe_http" in v.reason


async def test_http_json_answer_is_honoured(bidder, probe_server) -> None:
    v = await probe(bidder(probe_http=f"{probe_server.url}/no"), "probe_http")
    assert not v.ok and "ShouldBid false: this node only takes gold jobs" in v.reason
    v = await probe(bidder(probe_http=f"{probe_server.url}/yes-json"), "probe_http")
    assert v.ok and "welcome" in v.reason


async def test_http_error_status_with_json_reason(bidder, probe_server) -> None:
    v = await probe(bidder(probe_http=f"{probe_server.url}/no-500"), "probe_http")
    assert not v.ok and "status 503: quota exhausted" in v.reason


async def test_http_200_with_body_that_is_not_an_answer_bids(bidder, probe_server) -> None:
    assert (await probe(bidder(probe_http=f"{probe_server.url}/garbage"), "probe_http")).ok


async def test_http_hang_is_cut_by_probe_timeout(bidder, probe_server) -> None:
    v = await probe(bidder(probe_http=f"{probe_server.url}/hang", probe_timeout="300ms"), "probe_http")
    assert not v.ok and "did not answer within 0.3s" in v.reason


async def test_http_connection_refused_is_a_rejection(bidder) -> None:
    v = await probe(bidder(probe_http=f"http://127.0.0.1:{free_port()}/x"), "probe_http")
    assert not v.ok and "could not be reached: ConnectError" in v.reason


async def test_http_bad_url_is_a_rejection(bidder) -> None:
    v = await probe(bidder(probe_http="not a url"), "probe_http")
    assert not v.ok and "could not be reached: UnsupportedProtocol" in v.reason


async def test_http_probe_with_callers_client(bidder, probe_server, setup) -> None:
    async with httpx.AsyncClient() as client:
        b = Bidder(
            node_id="n",
            selection=JobSelectionConfig(probe_http=f"{probe_server.url}/ok"),
            timeouts=TimeoutsConfig(),
            limits=limits(),
            facts=Facts(),
            storage={},
            plans=ShardPlans({}),
            http=client,
        )
        assert (await probe(b, "probe_http")).ok
        await b.aclose()  # the caller's client stays open
        assert not client.is_closed


async def test_own_client_is_closed(bidder, probe_server) -> None:
    b = bidder(probe_http=f"{probe_server.url}/ok")
    assert (await probe(b, "probe_http")).ok
    await b.aclose()


# -- exec probe --------------------------------------------------------------------------------


async def test_exec_exit_0_bids(bidder, tmp_path: Path) -> None:
    assert (await probe(bidder(probe_exec=script(tmp_path, "yes.sh", "exit 0\n")), "probe_exec")).ok


async def test_exec_gets_payload_on_stdin_and_in_env(bidder, tmp_path: Path) -> None:
    body = (
        f"cat > {tmp_path}/stdin.json\n"
        f'printf %s "$COMPUTENODE_JOB_SELECTION_PROBE_DATA" > {tmp_path}/env1.json\n'
        f'printf %s "$BACALHAU_JOB_SELECTION_PROBE_DATA" > {tmp_path}/env2.json\n'
    )
    assert (await probe(bidder(probe_exec=script(tmp_path, "dump.sh", body)), "probe_exec")).ok
    stdin = json.loads((tmp_path / "stdin.json").read_text())
    assert stdin == json.loads((tmp_path / "env1.json").read_text())
    assert stdin == json.loads((tmp_path / "env2.json").read_text())
    assert stdin["job_id"] == "job-1" and stdin["spec"]["Engine"] == "Docker"


async def test_exec_exit_1_gives_stderr_as_reason(bidder, tmp_path: Path) -> None:
    cmd = script(tmp_path, "no.sh", "echo '  no GPU   on this host ' >&2\nexit 1\n")
    v = await probe(bidder(probe_exec=cmd), "probe_exec")
    assert not v.ok
    assert v.reason == "job_selection.probe_exec exited with code 1: no GPU on this host"


async def test_exec_reason_is_capped(bidder, tmp_path: Path) -> None:
    cmd = script(tmp_path, "loud.sh", "head -c 1000000 /dev/zero | tr '\\0' x >&2\nexit 3\n")
    v = await probe(bidder(probe_exec=cmd), "probe_exec")
    assert not v.ok and "code 3" in v.reason and len(v.reason) < 600


async def test_exec_inline_command_and_missing_program(bidder) -> None:
    v = await probe(bidder(probe_exec="no-such-program-here --x"), "probe_exec")
    assert not v.ok and "code 127" in v.reason and "not found" in v.reason
    assert (await probe(bidder(probe_exec='test -n "$BACALHAU_JOB_SELECTION_PROBE_DATA"'), "probe_exec")).ok


async def test_exec_does_not_see_the_daemons_environment(bidder, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPUTENODE_API__TOKEN", "secret")
    v = await probe(bidder(probe_exec='test -z "$COMPUTENODE_API__TOKEN"'), "probe_exec")
    assert v.ok, v


def is_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie is dead, awaiting its reaper
    except FileNotFoundError:
        return True


async def wait_gone(pid: int) -> None:
    async with asyncio.timeout(10):
        while not is_gone(pid):
            await asyncio.sleep(0.05)


async def test_exec_hang_is_killed_with_its_children(bidder, tmp_path: Path) -> None:
    body = f"sleep 60 &\necho $! > {tmp_path}/child\necho $$ > {tmp_path}/self\nwait\n"
    v = await probe(bidder(probe_exec=script(tmp_path, "hang.sh", body), probe_timeout="500ms"), "probe_exec")
    assert not v.ok and "did not finish within 0.5s and was killed" in v.reason
    await wait_gone(int((tmp_path / "self").read_text()))
    await wait_gone(int((tmp_path / "child").read_text()))


async def test_exec_child_left_behind_does_not_hold_the_bid(bidder, tmp_path: Path) -> None:
    body = f"sleep 60 &\necho $! > {tmp_path}/child\nexit 0\n"
    v = await probe(bidder(probe_exec=script(tmp_path, "bg.sh", body), probe_timeout="20s"), "probe_exec")
    assert v.ok, v
    await wait_gone(int((tmp_path / "child").read_text()))


async def test_exec_cancelled_bid_kills_the_probe(bidder, tmp_path: Path) -> None:
    body = f"sleep 60 &\necho $! > {tmp_path}/child\necho $$ > {tmp_path}/self\nwait\n"
    b = bidder(probe_exec=script(tmp_path, "slow.sh", body), probe_timeout="30s")
    task = asyncio.create_task(b.evaluate(make_job()))
    async with asyncio.timeout(10):
        while not (tmp_path / "self").exists() or not (tmp_path / "self").read_text().strip():
            await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(10):
            await task
    await wait_gone(int((tmp_path / "self").read_text()))
    await wait_gone(int((tmp_path / "child").read_text()))


def probe_processes(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        if p.info["status"] != psutil.STATUS_ZOMBIE and any(marker in arg for arg in p.info["cmdline"] or ()):
            found.append(p)
    return found


@pytest.mark.parametrize("yields", range(8))
async def test_exec_cancelled_while_starting_leaves_nothing(bidder, tmp_path: Path, yields: int) -> None:
    """Cancel at each early step of the spawn: the bid ends at once and no probe process survives."""
    marker = f"600.{yields}{os.getpid()}"
    cmd = script(tmp_path, "starting.sh", f"sleep {marker} &\nwait\n")
    task = asyncio.create_task(bidder(probe_exec=cmd, probe_timeout="30s").evaluate(make_job()))
    for _ in range(yields):
        await asyncio.sleep(0)
    task.cancel()
    async with asyncio.timeout(5):
        with pytest.raises(asyncio.CancelledError):
            await task
        while probe_processes(marker) or probe_processes(cmd):
            await asyncio.sleep(0.05)


async def test_both_probes_run_concurrently(bidder, probe_server, tmp_path: Path) -> None:
    cmd = script(tmp_path, "no.sh", "echo nope >&2\nexit 1\n")
    b = bidder(probe_http=f"{probe_server.url}/error", probe_exec=cmd)
    got = {v.name: v for v in await b.evaluate(make_job())}
    assert not got["probe_http"].ok and not got["probe_exec"].ok
    assert os.path.exists(cmd)
