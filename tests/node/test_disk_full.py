"""A Docker job's outputs cannot fill the disk, and a full disk does not take the node down: a
small tmpfs as data_dir, mounted by the test (the suite runs as root) and unmounted after."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.node.conftest import node_settings, start_node

BUSYBOX = "computenode-test/busybox:latest"


@pytest.fixture
async def small_disk(tmp_path: Path) -> AsyncIterator[Path]:
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = await asyncio.to_thread(
        subprocess.run,
        ["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.fail(f"mounting a tmpfs needs root (the test bed runs as root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        await asyncio.to_thread(subprocess.run, ["umount", "-l", str(mount)], check=True)


def settings(data_dir: Path, ipfs_api: str, docker_host: str) -> Any:
    s = node_settings(
        data_dir.parent,
        ipfs_api,
        engines={"docker": {"enabled": True, "host": docker_host}},
        retention={"min_free_disk": "16Mi"},  # more than the disk reserve, as 1Gi is by default
        capacity={"total": {"cpu": "2", "memory": "2Gi", "disk": "30Mi"}},
    )
    return s.model_copy(update={"node": s.node.model_copy(update={"data_dir": data_dir / "node"})})


async def gone(path: Path) -> None:
    """Wait for a failed execution's files to go: removed just after its state is stored."""
    async with asyncio.timeout(10):
        while await asyncio.to_thread(path.exists):
            await asyncio.sleep(0.05)


def fill(path: Path) -> None:
    """Write zeros until the disk is full."""
    subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=1M"], capture_output=True)


async def test_outputs_over_the_disk_allowance_stop_the_job(
    small_disk: Path, ipfs_api: str, docker_host: str
) -> None:
    rn = await start_node(settings(small_disk, ipfs_api, docker_host))
    try:
        job = {
            "Spec": {
                "Engine": "Docker",
                "Publisher": "Local",
                "Resources": {"Disk": "2Mi"},
                "Docker": {
                    "Image": BUSYBOX,
                    "Entrypoint": ["sh", "-c", "dd if=/dev/zero of=/out/big bs=1M count=12; sleep 60"],
                },
                "outputs": [{"Name": "out", "path": "/out"}],
            }
        }
        created = await rn.http.post("/api/v1/jobs", json=job)
        assert created.status_code == 201, created.text
        body = await rn.wait_job(created.json()["JobID"], timeout_s=30)  # well before the job's own 60 s
        assert body["State"] == "Error", body
        [ex] = (await rn.http.get(f"/api/v1/executions?job_id={body['Job']['Metadata']['ID']}")).json()[
            "Executions"
        ]
        assert "over the disk allowance of 2097152 bytes" in ex["Comment"], ex["Comment"]
        await gone(small_disk / "node" / "executions" / ex["ExecutionID"])  # what it wrote is freed
    finally:
        await rn.stop()


async def test_a_full_disk_is_a_reason_not_a_crash(small_disk: Path, ipfs_api: str, docker_host: str) -> None:
    s = settings(small_disk, ipfs_api, docker_host)
    rn = await start_node(s)
    await rn.stop()
    filler = small_disk / "filler"
    await asyncio.to_thread(fill, filler)

    rn = await start_node(s)  # comes up on a full disk
    try:
        ready = await rn.http.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert "free disk" in ready.json()["checks"]["disk"]["reason"]
        refused = await rn.http.post("/api/v1/jobs", json={"Spec": {"Engine": "Noop"}})
        assert refused.status_code == 409 and "low on disk" in refused.text

        filler.unlink()  # space returns: the node takes work again
        async with asyncio.timeout(30):
            while (await rn.http.get("/readyz")).status_code != 200:
                await asyncio.sleep(0.2)
        created = await rn.http.post("/api/v1/jobs", json={"Spec": {"Engine": "Noop"}})
        assert created.status_code == 201, created.text
        assert (await rn.wait_job(created.json()["JobID"]))["State"] == "Completed"
    finally:
        await rn.stop()


async def test_enospc_mid_run_fails_the_execution_and_frees_its_files(
    small_disk: Path, ipfs_api: str, docker_host: str
) -> None:
    rn = await start_node(settings(small_disk, ipfs_api, docker_host))
    try:
        job = {  # stdout is the node's to write: 60 MiB of it cannot fit on a 48 MiB disk
            "Spec": {
                "Engine": "Docker",
                "Publisher": "Local",
                "Docker": {"Image": BUSYBOX, "Entrypoint": ["sh", "-c", "yes | head -c 62914560"]},
            }
        }
        created = await rn.http.post("/api/v1/jobs", json=job)
        assert created.status_code == 201, created.text
        body = await rn.wait_job(created.json()["JobID"], timeout_s=60)
        assert body["State"] == "Error", body
        page = await rn.http.get(f"/api/v1/executions?job_id={body['Job']['Metadata']['ID']}")
        comments = [e["Comment"] for e in page.json()["Executions"]]
        assert len(comments) == 1, comments  # never retried: the same job fills the same disk
        ex = page.json()["Executions"][0]
        assert "no space left on the node's disk" in ex["Comment"], ex["Comment"]
        await gone(small_disk / "node" / "executions" / ex["ExecutionID"])
        assert (await rn.http.get("/healthz")).status_code == 200
    finally:
        await rn.stop()
