"""Real jobs through a real node: Docker and WASM over HTTP, results fetched with `computenode get`,
and a job sharded over a kubo directory."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import yaml

from tests.node.conftest import RunningNode

REPO = Path(__file__).resolve().parents[2]
COMPUTENODE = str(Path(sys.executable).parent / "computenode")
BUSYBOX = "computenode-test/busybox:latest"
DOCKER = {"engines": {"docker": {"enabled": True}, "noop": {"enabled": False}}}


async def run(*cmd: str) -> str:
    """A command run without blocking the loop the node serves from."""
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, env=os.environ)  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def get(rn: RunningNode, job_id: str, out: Path, ipfs_api: str) -> None:
    await run(COMPUTENODE, "get", job_id, "--node", rn.url, "--ipfs-api", ipfs_api, "--output-dir", str(out))


async def test_docker_job_and_get(make_node, tmp_path: Path, ipfs_api: str, docker_host: str) -> None:
    rn: RunningNode = await make_node(engines={"docker": {"enabled": True, "host": docker_host}})
    job = {"Spec": {"Engine": "Docker", "Publisher": "Local",
                    "Docker": {"Image": BUSYBOX, "Entrypoint": ["sh", "-c", "echo hi > /outputs/greeting.txt; echo out"]},
                    "outputs": [{"Name": "outputs", "path": "/outputs"}]}}  # fmt: skip
    r = await rn.http.post("/api/v1/jobs", json=job)
    assert r.status_code == 201, r.text
    body = await rn.wait_job(r.json()["JobID"])
    assert body["State"] == "Completed", body
    assert body["Shards"][0]["RunOutput"]["stdout"] == "out\n"
    await get(rn, body["Job"]["Metadata"]["ID"], tmp_path / "got", ipfs_api)
    assert (tmp_path / "got/per_shard/0/outputs/greeting.txt").read_text() == "hi\n"
    assert (tmp_path / "got/per_shard/0/exitCode").read_text() == "0"
    assert (tmp_path / "got/combined/outputs/greeting.txt").read_text() == "hi\n"
    assert (tmp_path / "got/combined/stdout").read_text() == "out\n"


async def test_wasm_example_job_and_get(make_node, tmp_path: Path, ipfs_api: str) -> None:
    rn: RunningNode = await make_node()
    job = yaml.safe_load((REPO / "examples" / "hello-wasm.yaml").read_text())
    r = await rn.http.post("/api/v1/jobs", json=job)
    assert r.status_code == 201, r.text
    body = await rn.wait_job(r.json()["JobID"])
    assert body["State"] == "Completed", body
    await get(rn, r.json()["JobID"], tmp_path / "got", ipfs_api)
    assert (tmp_path / "got/combined/stdout").read_text() == "hello from wasm\n"


async def test_job_sharded_over_a_kubo_directory(make_node, tmp_path: Path, ipfs_api: str, ipfs_bin: str,
                                                 docker_host: str) -> None:  # fmt: skip
    data = tmp_path / "data"
    data.mkdir()
    for i in range(6):
        (data / f"file{i}.txt").write_text("x\n" * (i + 1))
    (data / "skip.bin").write_bytes(b"not matched")
    cid = (await run(ipfs_bin, "add", "-Q", "-r", str(data))).strip()
    rn: RunningNode = await make_node(engines={"docker": {"enabled": True, "host": docker_host}},
                                      job_selection={"locality": "local"})  # fmt: skip
    job = {"Spec": {"Engine": "Docker", "Publisher": "Ipfs",
                    "Docker": {"Image": BUSYBOX, "Entrypoint": ["sh", "-c", "cat /inputs/*.txt | wc -l > /outputs/n"]},
                    "inputs": [{"StorageSource": "IPFS", "CID": cid, "path": "/inputs"}],
                    "outputs": [{"Name": "outputs", "path": "/outputs"}],
                    "Sharding": {"GlobPattern": "*.txt", "BatchSize": 2, "GlobPatternBasePath": "/inputs"}}}  # fmt: skip
    r = await rn.http.post("/api/v1/jobs", json=job)
    assert r.status_code == 201, r.text
    body = await rn.wait_job(r.json()["JobID"], timeout_s=120)
    assert body["State"] == "Completed", body
    assert [s["ShardIndex"] for s in body["Shards"]] == [0, 1, 2]
    assert all(s["PublishedResults"]["StorageSource"] == "IPFS" for s in body["Shards"])
    await get(rn, r.json()["JobID"], tmp_path / "got", ipfs_api)
    counts = [int((tmp_path / f"got/per_shard/{i}/outputs/n").read_text()) for i in range(3)]
    assert counts == [1 + 2, 3 + 4, 5 + 6]


def deterministic_job(command: str, concurrency: int, confidence: int) -> dict:
    return {"Spec": {"Engine": "Docker", "Verifier": "Deterministic", "Publisher": "Local",
                     "Docker": {"Image": BUSYBOX, "Entrypoint": ["sh", "-c", command]},
                     "outputs": [{"Name": "outputs", "path": "/outputs"}],
                     "Deal": {"Concurrency": concurrency, "Confidence": confidence}}}  # fmt: skip


async def test_deterministic_verification_accepts_agreeing_results(make_node, docker_host: str) -> None:
    rn: RunningNode = await make_node(engines={"docker": {"enabled": True, "host": docker_host}})
    r = await rn.http.post("/api/v1/jobs", json=deterministic_job("echo same > /outputs/r", 3, 2))
    assert r.status_code == 201, r.text
    job_id = r.json()["JobID"]
    assert (await rn.wait_job(job_id, timeout_s=120))["State"] == "Completed"
    executions = (await rn.http.get(f"/api/v1/executions?job_id={job_id}")).json()["Executions"]
    assert sorted(e["State"] for e in executions) == ["Completed"] * 3


async def test_deterministic_verification_rejects_disagreeing_results(make_node, docker_host: str) -> None:
    rn: RunningNode = await make_node(engines={"docker": {"enabled": True, "host": docker_host}})
    command = "head -c 16 /dev/urandom > /outputs/r"
    job_id = (await rn.http.post("/api/v1/jobs", json=deterministic_job(command, 2, 2))).json()["JobID"]
    assert (await rn.wait_job(job_id, timeout_s=120))["State"] == "Error"
    executions = (await rn.http.get(f"/api/v1/executions?job_id={job_id}")).json()["Executions"]
    assert [e["State"] for e in executions] == ["Failed", "Failed"]
    assert all("differs" in e["Comment"] for e in executions)


async def test_logs_of_a_published_execution_are_whole(make_node, docker_host: str) -> None:
    """After publishing, `logs` still gives the whole stdout, not the 2048 bytes kept inline."""
    rn: RunningNode = await make_node(engines={"docker": {"enabled": True, "host": docker_host}})
    script = "yes xxxxxxxxx | head -c 10000"
    job = {
        "Spec": {
            "Engine": "Docker",
            "Publisher": "Local",
            "Docker": {"Image": BUSYBOX, "Entrypoint": ["sh", "-c", script]},
        }
    }
    created = await rn.http.post("/api/v1/jobs", json=job)
    body = await rn.wait_job(created.json()["JobID"])
    assert body["State"] == "Completed", body
    eid = body["Shards"][0]["ExecutionId"]
    logs = await rn.http.get(f"/api/v1/executions/{eid}/logs")
    assert logs.status_code == 200 and logs.text == ("xxxxxxxxx\n" * 1000)[:10000]
    work = rn.node.compute.runner.work_dir(eid)
    async with asyncio.timeout(10):  # the rest of the work dir goes just after Completed is stored
        while await asyncio.to_thread(work.exists):
            await asyncio.sleep(0.05)
