"""/readyz tells the truth: private dockerd and kubo that only this test stops and starts again."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.operations.daemon import Daemon
from tests.services import PrivateKubo


class PrivateDockerd:
    def __init__(self, root: Path) -> None:
        self.root = root  # short path: unix sockets are limited to 108 bytes
        self.sock = root / "d.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.root / "dockerd.log", "ab") as log:  # dockerd writes to its own copy of the fd
            self.proc = subprocess.Popen([
                "dockerd", "--host", f"unix://{self.sock}", "--data-root", str(self.root / "data"),
                "--exec-root", str(self.root / "x"), "--pidfile", str(self.root / "d.pid"),
                "--bridge=none", "--iptables=false", "--ip-masq=false",
            ], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ok = subprocess.run(["docker", "-H", f"unix://{self.sock}", "version"], capture_output=True)
            if ok.returncode == 0:
                return
            time.sleep(0.2)
        raise AssertionError(
            "private dockerd did not start: " + (self.root / "dockerd.log").read_text()[-2000:]
        )

    def stop(self) -> None:
        """Stop the engine and whatever it left: a dockerd killed by a test leaves its containerd
        shims running the containers, and their mounts under the root, behind (reaped here so
        no test run leaks processes or mounts onto the machine)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        for proc in psutil.process_iter(["cmdline"]):
            if any(str(self.root) in arg for arg in proc.info["cmdline"] or ()):
                with contextlib.suppress(psutil.Error):
                    proc.kill()
                    proc.wait(10)
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
        for point in sorted((m for m in mounts if m.startswith(f"{self.root}/")), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)


@pytest.fixture
def private_services(ipfs_bin: str, docker_host: str) -> Iterator[tuple[PrivateDockerd, PrivateKubo]]:
    root = Path(tempfile.mkdtemp(prefix="cn-", dir="/tmp"))
    dockerd, kubo = PrivateDockerd(root), PrivateKubo(ipfs_bin, root)
    try:
        dockerd.start()
        kubo.start()
        yield dockerd, kubo
    finally:
        dockerd.stop()
        kubo.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_readiness_follows_dependencies(private_services, tmp_path: Path, docker_host: str) -> None:
    dockerd, kubo = private_services
    d = Daemon(tmp_path, kubo.api, f"unix://{dockerd.sock}",
               engines={"wasm": {"enabled": False}, "noop": {"enabled": False}})  # fmt: skip
    d.start()
    try:
        body = d.wait_for("/readyz", lambda r: r["status"] == "ok")
        assert {"docker", "ipfs", "store", "disk", "draining"} <= set(body["checks"])

        kubo.stop()
        body = d.wait_for("/readyz", lambda r: not r["checks"]["ipfs"]["ok"])
        assert body["status"] == "degraded" and body["checks"]["ipfs"]["reason"]
        assert d.get("/readyz").status_code == 200  # Docker jobs without IPFS can still run

        dockerd.stop()
        body = d.wait_for("/readyz", lambda r: not r["checks"]["docker"]["ok"])
        assert body["checks"]["docker"]["reason"]
        assert d.get("/readyz").status_code == 503  # no engine can run anything

        dockerd.start()
        kubo.start()
        d.wait_for("/readyz", lambda r: r["status"] == "ok", timeout_s=40)
        assert d.get("/readyz").status_code == 200
    finally:
        d.stop()
