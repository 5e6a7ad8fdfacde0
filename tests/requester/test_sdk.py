"""End to end: a real node driven by the official bacalhau-sdk 0.1.6 (bacalhau-apiclient 0.3.23.post8)."""

from __future__ import annotations

import base64
import json

import httpx
import wasmtime

from computenode.model import ExecutionState
from tests.node.conftest import TEST_NODE_ID, RunningNode
from tests.requester.conftest import Sdk
from tests.requester.keys import client_id, client_key, pkcs1_b64, sign, signed_body

BUSYBOX = "computenode-test/busybox:latest"
HELLO_WAT = """
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "hello from wasm\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 16))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
"""


def docker_spec(*cmd: str, publisher: str = "Estuary") -> str:
    # As the SDK's README example: Docker, Noop verifier, Estuary publisher, an IPFS output.
    return json.dumps({
        "Engine": "Docker", "Verifier": "Noop", "Publisher": publisher,
        "Docker": {"Image": BUSYBOX, "Entrypoint": list(cmd)},
        "Deal": {"Concurrency": 1}, "Timeout": 120, "Annotations": ["sdk-test"],
        "outputs": [{"StorageSource": "IPFS", "Name": "outputs", "path": "/outputs"}],
    })  # fmt: skip


def wasm_spec() -> str:
    module = base64.b64encode(wasmtime.wat2wasm(HELLO_WAT)).decode()
    return json.dumps({
        "Engine": "Wasm", "Verifier": "Noop", "Publisher": "Local",
        "Wasm": {"EntryPoint": "_start", "EntryModule": {
            "StorageSource": "Inline", "URL": f"data:application/wasm;base64,{module}", "path": "/app/main.wasm"}},
    })  # fmt: skip


async def test_sdk_runs_docker_and_wasm_jobs(node: RunningNode, sdk: Sdk) -> None:
    me = await sdk.ok("client_id")
    docker_job = (
        await sdk.ok("submit", docker_spec("sh", "-c", "echo hello from docker > /outputs/f; echo out"))
    )["job"]
    wasm_job = (await sdk.ok("submit", wasm_spec()))["job"]
    assert docker_job["metadata"]["client_id"] == me and docker_job["metadata"]["id"]

    state = await sdk.ok("wait", docker_job["metadata"]["id"])
    assert state["state"] == "Completed", state
    [shard] = state["shards"].values()
    [ex] = shard["executions"]
    assert shard["state"] == "Completed" and ex["state"] == "Completed" and ex["node_id"] == TEST_NODE_ID
    assert ex["run_output"]["stdout"] == "out\n" and ex["run_output"]["exit_code"] == 0
    # Estuary without a key is published to IPFS, as v0.3.23 did.
    [result] = (await sdk.ok("results", docker_job["metadata"]["id"]))["results"]
    assert result["data"]["storage_source"] == "IPFS" and result["data"]["cid"]

    state = await sdk.ok("wait", wasm_job["metadata"]["id"])
    assert state["state"] == "Completed", state
    [ex] = next(iter(state["shards"].values()))["executions"]
    assert ex["run_output"]["stdout"] == "hello from wasm\n"
    [result] = (await sdk.ok("results", wasm_job["metadata"]["id"]))["results"]
    assert result["data"]["storage_source"] == "URLDownload"

    listed = (await sdk.ok("list"))["jobs"]
    assert {j["job"]["metadata"]["id"] for j in listed} == {
        docker_job["metadata"]["id"],
        wasm_job["metadata"]["id"],
    }
    assert all(j["state"]["state"] == "Completed" for j in listed)
    events = (await sdk.ok("events", docker_job["metadata"]["id"]))["events"]
    assert [e["execution_state"]["new"] for e in events if e.get("execution_state")][-1] == "Completed"


async def test_node_endpoints_in_v03_shapes(node: RunningNode, sdk: Sdk) -> None:
    info = await sdk.ok("node_info")
    assert info["compute_node_info"]["execution_engines"] == ["Docker", "Noop", "Wasm"]
    assert info["labels"] == {"env": "test"} and info["compute_node_info"]["max_capacity"]["cpu"] == 2
    assert (await sdk.ok("version"))["build_version_info"]["gitversion"] == "v0.3.23"
    assert await sdk.ok("id") == TEST_NODE_ID
    assert await sdk.ok("livez") == "b'OK'"  # the apiclient str()s the text/plain bytes, as against Bacalhau
    assert (await node.http.get("/healthz")).json() == {"status": "ok"}  # the node's own, unchanged


async def test_sdk_cancels_a_running_job_and_another_client_cannot(
    node: RunningNode, sdk: Sdk, other_sdk: Sdk
) -> None:
    job_id = (await sdk.ok("submit", docker_spec("sleep", "600", publisher="Local")))["job"]["metadata"]["id"]
    await wait_running(node, job_id)

    refused = await other_sdk("cancel", job_id)
    assert not refused["ok"] and refused["status"] == 403, refused
    assert "another client" in json.loads(refused["body"])["reasons"][0]
    hidden = await other_sdk("states_raw", job_id)
    assert not hidden["ok"] and hidden["status"] == 404, hidden
    assert (await other_sdk.ok("list"))["jobs"] == []

    state = (await sdk.ok("cancel", job_id))["state"]
    assert state["state"] == "Cancelled", state
    [ex] = next(iter(state["shards"].values()))["executions"]
    assert ex["state"] == "Cancelled"
    again = await sdk("cancel", job_id)
    assert again["status"] == 409 and "already Cancelled" in again["body"]


async def wait_running(node: RunningNode, job_id: str) -> None:
    for _ in range(200):
        if any(e.state is ExecutionState.RUNNING for e in await node.node.store.executions(job_id=job_id)):
            return
        await node.node.compute.wait_changed(0.5)
    raise AssertionError(f"job {job_id} never ran")


async def test_refused_submissions_store_nothing(node: RunningNode) -> None:
    key, other = client_key(0), client_key(1)
    spec = json.loads(docker_spec("true"))
    tampered = signed_body(key, {"ClientID": client_id(key), "Spec": spec}).replace(b"true", b"false")
    wrong_id = signed_body(key, {"ClientID": client_id(other), "Spec": spec})
    signed_by_other = signed_body(key, {"ClientID": client_id(key), "Spec": spec}, signer=other)
    for body, why in [(tampered, "signature does not match"), (wrong_id, "ClientID does not match"),
                      (signed_by_other, "signature does not match")]:  # fmt: skip
        resp = await node.http.post("/requester/submit", content=body)
        assert resp.status_code == 403, resp.text
        assert why in resp.json()["reasons"][0] and resp.json()["error"]
    assert await node.node.store.jobs() == []


async def test_seed_shapes_and_ownership_over_raw_http(node: RunningNode) -> None:
    key = client_key(0)
    me = client_id(key)
    noop = {"APIVersion": "V1beta1", "Spec": {"Engine": "Noop", "Publisher": "Noop"}}
    # the submit envelope: the whole body is {"data": {ClientID, Job}, signature, client_public_key}
    resp = await node.http.post(
        "/requester/submit", content=signed_body(key, {"ClientID": me, "Job": noop}, "data")
    )
    assert resp.status_code == 200, resp.text
    job_id = resp.json()["job"]["Metadata"]["ID"]
    # a job from /api/v1/jobs belongs to no client here
    owned = await node.http.post("/api/v1/jobs", json=noop)
    assert owned.status_code == 201
    listed = (await node.http.post("/requester/list", json={"client_id": me})).json()["jobs"]
    assert [j["Job"]["Metadata"]["ID"] for j in listed] == [job_id]
    short = await node.http.post("/requester/states", json={"client_id": me, "job_id": job_id[:8]})
    assert short.json()["state"]["JobID"] == job_id
    theirs = await node.http.post(
        "/requester/states", json={"client_id": me, "job_id": owned.json()["JobID"]}
    )
    assert theirs.status_code == 404
    # a signed cancel for a job from /api/v1/jobs is not found: it has no owner to match
    raw = json.dumps({"ClientID": me, "JobID": owned.json()["JobID"]}).encode()
    body = {
        "client_public_key": pkcs1_b64(key),
        "job_cancel_payload": json.loads(raw),
        "signature": sign(key, raw),
    }
    resp = await node.http.post("/requester/cancel", content=json.dumps(body).encode())
    assert resp.status_code == 404, resp.text


async def test_malformed_requests_are_400(node: RunningNode) -> None:
    async with httpx.AsyncClient(base_url=node.url) as http:
        assert (await http.post("/requester/states", content=b"[")).status_code == 400
        assert (await http.post("/requester/list", json={})).status_code == 400
        resp = await http.post("/requester/submit", content=b'{"signature": "x"}')
        assert resp.status_code == 403 and "no job_create_payload" in resp.json()["reasons"][0]
