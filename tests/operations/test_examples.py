"""Every file of examples/ submitted with the CLI, as its comments say, to a node run as `make run`
runs it: config/computenode.yaml, --data-dir, the test bed's Docker engine and kubo.

What a user must fill in is filled in by the test, and only that: sharded-ipfs.yaml's CID (the
test adds a directory to the test bed's kubo), url-input.yaml's URL (the test serves data.csv)
and the envelope's image (seed-002-submit.json names ubuntu, which the test bed does not have:
the test bed's busybox runs the same `date`). The images the other examples name are the test
bed's own (computenode-test/busybox:latest, built by scripts/testbed.sh).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.operations.daemon import REPO, free_port
from tests.test_cli import NodeProcess, clean_env

EXAMPLES = REPO / "examples"
CONFIG = REPO / "config" / "computenode.yaml"


@pytest.fixture(scope="module")
def make_run(tmp_path_factory: pytest.TempPathFactory, ipfs_api: str, docker_host: str) -> Iterator[Any]:
    """Nodes started as `make run` starts one (extra environment: what an example asks for)."""
    started: list[tuple[NodeProcess, str]] = []

    def start(**env: str) -> str:
        tmp = tmp_path_factory.mktemp("node")
        node_env = clean_env(
            COMPUTENODE_STORAGE__IPFS__API=ipfs_api, COMPUTENODE_ENGINES__DOCKER__HOST=docker_host, **env
        )
        node = NodeProcess(tmp, "--config", str(CONFIG), "--listen", f"127.0.0.1:{free_port()}", env=node_env)
        url = node.wait_ready()
        started.append((node, httpx.get(url + "/api/v1/node", timeout=10).json()["ID"]))
        return url

    yield start
    for node, node_id in started:
        node.stop()
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=io.computenode.node={node_id}"],
                             capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
        for cid in ids:
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True)


@pytest.fixture(scope="module")
def node(make_run: Any) -> str:
    return str(make_run())


def submit(node: str, path: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "computenode.cli", "submit", "--wait", "--timeout", "120", str(path), "--node", node],
        capture_output=True, text=True, cwd=path.parent, env=clean_env(), timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, f"{path.name}:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done


def test_every_example_is_tested() -> None:
    tested = {
        "hello-docker.yaml",
        "hello-wasm.yaml",
        "sharded-ipfs.yaml",
        "url-input.yaml",
        "seed-002-submit.json",
    }
    assert {p.name for p in EXAMPLES.iterdir()} == tested


@pytest.mark.parametrize("name", ["hello-wasm.yaml", "hello-docker.yaml"])
def test_hello_examples_as_written(node: str, name: str) -> None:
    done = submit(node, EXAMPLES / name)
    assert f"hello from {name.split('-')[1].split('.')[0]}" in done.stdout


def test_sharded_ipfs_example(node: str, ipfs_bin: str, tmp_path: Path) -> None:
    data = tmp_path / "mydata"
    data.mkdir()
    for i, lines in enumerate((1, 2, 3)):
        (data / f"f{i}.txt").write_text("x\n" * lines)
    # As the example's comment says: ipfs add -r --cid-version 1 ./mydata, in the node's kubo.
    cid = subprocess.run([ipfs_bin, "add", "-r", "-Q", "--cid-version", "1", str(data)],
                         capture_output=True, text=True, check=True, env=os.environ).stdout.strip()  # fmt: skip
    job = yaml.safe_load((EXAMPLES / "sharded-ipfs.yaml").read_text())
    job["Spec"]["inputs"][0]["CID"] = cid
    path = tmp_path / "sharded-ipfs.yaml"
    path.write_text(yaml.safe_dump(job))
    done = submit(node, path)
    # Three files, two per shard: two shards (the old glob /inputs/* matched nothing).
    assert "shard 0: Completed" in done.stdout and "shard 1: Completed" in done.stdout, done.stdout
    assert "shard 2" not in done.stdout


def test_url_input_example(make_run: Any, tmp_path: Path) -> None:
    served = tmp_path / "www"
    served.mkdir()
    (served / "data.csv").write_text("a,b\n1,2\n")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        # The example's comment: a node bids on URL inputs only with locality anywhere.
        node = make_run(COMPUTENODE_JOB_SELECTION__LOCALITY="anywhere")
        job = yaml.safe_load((EXAMPLES / "url-input.yaml").read_text())
        job["Spec"]["inputs"][0]["URL"] = f"http://127.0.0.1:{server.server_port}/data.csv"
        path = tmp_path / "url-input.yaml"
        path.write_text(yaml.safe_dump(job))
        done = submit(node, path)
        assert "/inputs/data.csv" in done.stdout, done.stdout
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_seed_submit_envelope(node: str, registry: str, tmp_path: Path) -> None:
    envelope = json.loads((EXAMPLES / "seed-002-submit.json").read_text())
    envelope["data"]["Job"]["Spec"]["Docker"]["Image"] = os.environ.get(
        "COMPUTENODE_TEST_BUSYBOX_IMAGE", "computenode-test/busybox:latest"
    )
    path = tmp_path / "seed-002-submit.json"
    path.write_text(json.dumps(envelope))
    done = submit(node, path)
    assert "Completed" in done.stdout, done.stdout
