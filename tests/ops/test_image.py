"""The container image: scripts/build-image.sh builds it offline, and it serves /healthz.

The build makes its base image with debootstrap the first time (a few minutes on
2 cores; see docs/docker-image.md), so this module has its own long timeout.
The container runs with the host's network (the engine has no bridge here) on a
free loopback port, without the Docker engine (no socket mounted), and is
removed whatever happens.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TAG = "computenode:test"
pytestmark = pytest.mark.timeout(1200)  # a cold build includes debootstrap


def docker(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, env=env, check=check, timeout=120
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def docker_env(docker_host: str) -> dict[str, str]:
    return {**os.environ, "DOCKER_HOST": docker_host}


@pytest.fixture(scope="module")
def image(docker_env: dict[str, str]) -> str:
    proc = subprocess.run([str(REPO / "scripts" / "build-image.sh"), TAG], capture_output=True, text=True,
                          env=docker_env, cwd=REPO)  # fmt: skip
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr)[-6000:]
        pytest.fail(f"scripts/build-image.sh {TAG} failed ({proc.returncode}):\n{out}", pytrace=False)
    return TAG


@pytest.fixture(scope="module")
def container(image: str, docker_env: dict[str, str]) -> Iterator[tuple[str, int]]:
    port = free_port()
    name = f"computenode-image-test-{os.getpid()}"
    run = docker("run", "-d", "--name", name, "--network", "host",
                 "-e", f"COMPUTENODE_API__LISTEN=127.0.0.1:{port}",
                 "-e", "COMPUTENODE_ENGINES__DOCKER__ENABLED=false", image,
                 env=docker_env, check=False)  # fmt: skip
    try:
        assert run.returncode == 0, run.stderr
        yield name, port
    finally:
        docker("rm", "-f", "-v", name, env=docker_env, check=False)


def wait_healthz(name: str, port: int, env: dict[str, str], bound: float = 60.0) -> None:
    """Poll /healthz until 200; fail with the container's log if it stops or never answers."""
    deadline = time.monotonic() + bound
    last = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
                last = f"HTTP {resp.status}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        state = docker("inspect", "-f", "{{.State.Running}}", name, env=env, check=False).stdout.strip()
        if state != "true":
            break
        time.sleep(0.5)
    logs = docker("logs", "--tail", "60", name, env=env, check=False)
    pytest.fail(f"/healthz of {name} never answered 200 ({last}); container log:\n{logs.stdout}{logs.stderr}",
                pytrace=False)  # fmt: skip


def test_container_serves_healthz(container: tuple[str, int], docker_env: dict[str, str]) -> None:
    name, port = container
    wait_healthz(name, port, docker_env)
    # The image's own HEALTHCHECK probe reaches the node where COMPUTENODE_API__LISTEN says.
    probe = docker("exec", name, "/usr/local/bin/computenode-healthcheck", env=docker_env, check=False)
    assert probe.returncode == 0, probe.stdout + probe.stderr
    uid = docker("exec", name, "id", "-un", env=docker_env).stdout.strip()
    assert uid == "computenode"


def test_image_metadata(image: str, docker_env: dict[str, str]) -> None:
    config = json.loads(docker("inspect", image, env=docker_env).stdout)[0]["Config"]
    assert config["User"] == "computenode"
    assert config["Healthcheck"]["Test"] == ["CMD", "/usr/local/bin/computenode-healthcheck"]
    assert "1234/tcp" in config["ExposedPorts"]
    assert "/var/lib/computenode" in config["Volumes"]
    assert "COMPUTENODE_API__LISTEN=0.0.0.0:1234" in config["Env"]
    assert config["Entrypoint"][:3] == ["/usr/bin/tini", "--", "computenode"]
