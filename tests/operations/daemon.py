"""A real `computenode run` process for tests that signal, kill and restart the daemon."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.node.conftest import deep_merge

REPO = Path(__file__).resolve().parents[2]
COMPUTENODE = str(Path(sys.executable).parent / "computenode")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# One node ID per test process, so two test runs on one machine never reap each other's containers.
OPS_NODE_ID = f"n-ops-{uuid.uuid4().hex[:8]}"


class Daemon:
    def __init__(self, tmp: Path, ipfs_api: str, docker_host: str, **extra: Any) -> None:
        self.tmp = tmp
        tmp.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = tmp / "computenode.yaml"
        self.log_path = tmp / "daemon.log"
        self.config = deep_merge({
            "node": {"id": OPS_NODE_ID, "labels": {"tier": "one"}, "data_dir": str(tmp / "data")},
            "api": {"listen": f"127.0.0.1:{self.port}"},
            "capacity": {"total": {"cpu": "2", "memory": "2Gi", "disk": "10Gi"}},
            "job_selection": {"locality": "anywhere"},
            "engines": {"docker": {"enabled": True, "host": docker_host, "reap_interval": "1s", "reap_grace": "1s"},
                        "wasm": {"enabled": True}, "noop": {"enabled": True}},
            "storage": {"ipfs": {"api": ipfs_api}},
            "retention": {"min_free_disk": "1Mi"},
            "timeouts": {"drain_grace": "1s"},
        }, extra)  # fmt: skip
        self.write_config()
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self) -> None:
        self.config_path.write_text(yaml.safe_dump(self.config))

    def start(self, env: dict[str, str] | None = None, wait: bool = True) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("COMPUTENODE_")}
        full_env.update(env or {})
        with open(self.log_path, "ab") as log:  # the daemon writes to its own copy of the fd
            self.proc = subprocess.Popen([COMPUTENODE, "run", "--config", str(self.config_path)],
                                         stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=REPO)  # fmt: skip
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited {self.proc.returncode}:\n{self.log_path.read_text()[-4000:]}"
                )
            try:
                if httpx.get(self.url + "/api/v1/node", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"daemon not ready in {timeout_s} s:\n{self.log_path.read_text()[-4000:]}")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout_s: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout_s)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10)

    def post(self, path: str, body: Any) -> httpx.Response:
        return httpx.post(self.url + path, json=body, timeout=30)

    def wait_for(self, path: str, predicate: Any, timeout_s: float = 30) -> Any:
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            last = self.get(path).json()
            if predicate(last):
                return last
            time.sleep(0.1)
        raise AssertionError(f"condition on {path} not met in {timeout_s} s; last: {last}")
