"""Smoke tests: the test bed's services answer and do the basic thing."""

from __future__ import annotations

import shutil
import subprocess
import uuid

import httpx

try:
    from tests import services
except ImportError:  # pragma: no cover
    import services  # type: ignore[no-redef]

# The applets the tests may use inside the busybox image.
BUSYBOX_APPLETS = (
    "sh echo cat ls wc sha256sum sleep date head tr env pwd id mkdir rm dd yes seq true false "
    "touch grep sed awk printf test expr kill"
).split()


def _docker(docker_host: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    docker = shutil.which("docker")
    assert docker, "no docker CLI in PATH (apt-get install docker.io)"
    return subprocess.run(
        [docker, "-H", docker_host, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_docker_ping(docker_host: str) -> None:
    with services.docker_client(docker_host) as client:
        r = client.get("/_ping")
    assert r.status_code == 200
    assert r.text == "OK"


def test_docker_runs_busybox_without_network(docker_host: str) -> None:
    out = _docker(docker_host, "run", "--rm", "--network", "none", services.BUSYBOX_IMAGE, "echo", "hi")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "hi\n"


def test_busybox_image_has_the_applets(docker_host: str) -> None:
    script = (
        "for c in " + " ".join(BUSYBOX_APPLETS) + '; do command -v "$c" >/dev/null || echo "missing $c"; done'
    )
    out = _docker(docker_host, "run", "--rm", "--network", "none", services.BUSYBOX_IMAGE, "sh", "-c", script)
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""


def test_registry_answers_and_holds_busybox(registry: str) -> None:
    r = httpx.get(f"http://{registry}/v2/", timeout=5)
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    tags = httpx.get(f"http://{registry}/v2/busybox/tags/list", timeout=5)
    assert tags.status_code == 200, tags.text
    assert "1" in tags.json()["tags"]


def test_ipfs_add_cat_roundtrip(ipfs_api: str) -> None:
    base = services.multiaddr_to_url(ipfs_api)
    payload = f"computenode testbed {uuid.uuid4()}\n".encode()
    with httpx.Client(base_url=base, timeout=30) as client:
        added = client.post("/api/v0/add", params={"pin": "false"}, files={"file": ("hello.txt", payload)})
        assert added.status_code == 200, added.text
        cid = added.json()["Hash"]
        got = client.post("/api/v0/cat", params={"arg": cid})
    assert got.status_code == 200, got.text
    assert got.content == payload


def test_ipfs_cli_is_kubo_0_28(ipfs_bin: str) -> None:
    out = subprocess.run([ipfs_bin, "version"], capture_output=True, text=True, timeout=30, check=False)
    assert out.stdout.strip() == f"ipfs version {services.KUBO_VERSION}"


def test_bacalhau_cli_is_v0_3_23() -> None:
    # Built by the test bed (scripts/bacalhau.sh build); the network tests run requesters with it.
    path, reason = services.bacalhau_bin()
    assert reason is None, f"{reason} (build it with {services.BACALHAU_BUILD_HINT})"
    assert services.probe_bacalhau_bin(path) is None
