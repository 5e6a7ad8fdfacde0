"""Shared by the bench scripts: a real `computenode run` process and a client that drives it over HTTP.

The node runs from the checkout this file is in (its own interpreter, cwd at the repository
root), so the bench process is only a client, as a real one is. `wrapper` puts a command in
front of the node (e.g. `strace -f -c -o FILE`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
HELLO_WASM = REPO / "examples" / "hello-wasm.yaml"
TERMINAL = {"Completed", "Failed", "Cancelled", "Error"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hello_job(outputs: bool = False) -> dict[str, Any]:
    """examples/hello-wasm.yaml; without outputs by default (the trivial job of issue 13)."""
    doc: dict[str, Any] = yaml.safe_load(HELLO_WASM.read_text())
    if not outputs:
        doc["Spec"].pop("outputs", None)
    return doc


def run_wasi(engine: Any, linker: Any, module: Any, out: Path) -> None:
    """One run of a WASI command as bare wasmtime-py makes it: a new Store, no deadline to speak
    of, stdout and stderr to files in `out`. The reference side of the WASM benches."""
    from wasmtime import Store, WasiConfig

    store = Store(engine)
    store.set_epoch_deadline(1 << 40)
    wasi = WasiConfig()
    wasi.argv = ["main"]
    wasi.stdout_file = str(out / "stdout")
    wasi.stderr_file = str(out / "stderr")
    store.set_wasi(wasi)
    linker.instantiate(store, module).exports(store)["_start"](store)


def docker_true_job(image: str) -> dict[str, Any]:
    return {
        "APIVersion": "V1beta1",
        "Spec": {
            "Engine": "Docker",
            "Verifier": "Noop",
            "Docker": {"Image": image, "Entrypoint": ["true"]},
            "Timeout": 60,
        },
    }


class NodeProcess:
    """`computenode run` in a child process with its own data dir; stop() ends it (SIGTERM)."""

    def __init__(
        self,
        docker: bool = False,
        wrapper: Sequence[str] = (),
        extra: dict[str, Any] | None = None,
        prefill: Callable[[Path], None] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """`prefill(data_dir)` runs before the node starts (e.g. a store filled by store_bench);
        `env` is added to the node's environment."""
        self.tmp = Path(tempfile.mkdtemp(prefix="computenode-bench-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config: dict[str, Any] = {
            "node": {"id": "n-bench", "data_dir": str(self.tmp / "data")},
            "api": {"listen": f"127.0.0.1:{self.port}"},
            "job_selection": {"locality": "anywhere"},
            "engines": {"docker": {"enabled": docker}},
            "retention": {"min_free_disk": "1Mi"},
            "logging": {"format": "json"},
        }
        for key, value in (extra or {}).items():
            config.setdefault(key, {}).update(value)
        cfg = self.tmp / "node.yaml"
        cfg.write_text(yaml.safe_dump(config))
        if prefill is not None:
            (self.tmp / "data").mkdir()
            prefill(self.tmp / "data")
        self.log = open(self.tmp / "node.log", "wb")  # noqa: SIM115 - closed in stop()
        code = "import sys; from computenode.cli import main; sys.exit(main())"
        cmd = [*wrapper, sys.executable, "-c", code, "run", "--config", str(cfg)]
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        self.started = time.perf_counter()
        self._wait_ready()
        self.ready_s = time.perf_counter() - self.started  # start to /readyz 200
        self.pid = self._node_pid(bool(wrapper))
        self.ps = psutil.Process(self.pid)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the node exited {self.proc.returncode}; see {self.tmp / 'node.log'}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise SystemExit("the node did not become ready in 60 s")

    def _node_pid(self, wrapped: bool) -> int:
        """The Python process itself, below a wrapper such as strace."""
        if not wrapped:
            return self.proc.pid
        for child in psutil.Process(self.proc.pid).children(recursive=True):
            if "computenode.cli" in " ".join(child.cmdline()):
                return child.pid
        raise SystemExit("the node process was not found under its wrapper")

    def cpu_seconds(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def submit(http: httpx.Client, job: dict[str, Any]) -> str:
    r = http.post("/api/v1/jobs", json=job)
    r.raise_for_status()
    return str(r.json()["JobID"])


def wait_job(http: httpx.Client, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    """Until the job is terminal, as a real client sees it: `?wait=` (a long poll where the node
    has one; a node without it answers at once and this polls every millisecond)."""
    deadline = time.monotonic() + timeout_s
    while True:
        body: dict[str, Any] = http.get(f"/api/v1/jobs/{job_id}", params={"wait": "10s"}).json()
        if body.get("State") in TERMINAL:
            return body
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {body.get('State')} after {timeout_s} s")
        time.sleep(0.001)


def pct(values: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def spread(values: Sequence[float], scale: float = 1e3, unit: str = "ms") -> str:
    """`min / median / max` of values, scaled (seconds to ms by default)."""
    return (
        f"min {min(values) * scale:8.2f} {unit}  median {statistics.median(values) * scale:8.2f} {unit}"
        f"  max {max(values) * scale:8.2f} {unit}"
    )


def dump(path: str | None, data: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2))
