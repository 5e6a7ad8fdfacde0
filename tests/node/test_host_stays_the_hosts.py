"""Nothing a job writes gives anyone more rights on the host: setuid and setgid bits are gone
from what stays under data_dir and from published results; device nodes, FIFOs and sockets are
refused. Real Docker jobs, running as root in their container."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

BUSYBOX = "computenode-test/busybox:latest"
SUID = stat.S_ISUID | stat.S_ISGID


def docker_job(script: str) -> dict[str, Any]:
    return {
        "Spec": {
            "Engine": "Docker",
            "Publisher": "Local",
            "Docker": {"Image": BUSYBOX, "Entrypoint": ["sh", "-c", script]},
            "outputs": [{"Name": "out", "path": "/out"}],
        }
    }


def special_bits_under(root: Path) -> list[str]:
    found = []
    for dirpath, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = os.path.join(dirpath, name)
            if os.lstat(path).st_mode & SUID and not os.path.islink(path):
                found.append(path)
    return found


async def test_setuid_output_loses_its_bits(make_node: Any, docker_host: str) -> None:
    rn = await make_node(engines={"docker": {"enabled": True, "host": docker_host}})
    script = (
        "cp /bin/busybox /out/rootshell && chmod 6755 /out/rootshell && mkdir /out/d && chmod 2775 /out/d"
    )
    # Offered by a requester: the results wait on disk for its verdict, where the test looks.
    offer = {"Job": docker_job(script), "ShardIndexes": [0], "CallbackURL": "http://127.0.0.1:9/r"}
    [bid] = (await rn.http.post("/api/v1/compute/ask_for_bid", json=offer)).json()["ShardResponse"]
    assert bid["Accepted"], bid
    eid = bid["ExecutionID"]
    await rn.http.post("/api/v1/compute/bid_accepted", json={"ExecutionID": eid})
    await rn.wait_execution(eid, {"WaitingVerification", "Failed"})
    results = rn.node.compute.runner.results_dir(eid)
    assert (results / "out" / "rootshell").is_file()
    assert special_bits_under(Path(rn.node.settings.node.data_dir)) == []
    await rn.http.post("/api/v1/compute/result_accepted", json={"ExecutionID": eid})
    assert (await rn.wait_execution(eid, {"Completed", "Failed"}))["State"] == "Completed"
    archive = await rn.http.get(f"/api/v1/executions/{eid}/results")
    assert archive.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(archive.content), mode="r:gz") as tar:
        modes = {m.name: m.mode for m in tar.getmembers()}
    assert "out/rootshell" in modes and modes["out/rootshell"] & 0o777 == 0o755
    assert all(not mode & 0o6000 for mode in modes.values()), modes


async def test_fifo_or_socket_output_is_refused_not_retried(make_node: Any, docker_host: str) -> None:
    rn = await make_node(engines={"docker": {"enabled": True, "host": docker_host}})
    created = await rn.http.post("/api/v1/jobs", json=docker_job("mkfifo /out/pipe; echo done"))
    body = await rn.wait_job(created.json()["JobID"])
    assert body["State"] == "Error", body
    executions = (await rn.http.get(f"/api/v1/executions?job_id={created.json()['JobID']}")).json()[
        "Executions"
    ]
    assert len(executions) == 1  # never retried: the same job writes the same FIFO
    assert "a FIFO out/pipe" in executions[0]["Comment"] and "refused" in executions[0]["Comment"]
