"""submit -> Completed as a separate client process sees it: the long poll
(`GET /api/v1/jobs/{id}?wait=`, what `submit --wait` uses) against the polling it replaced
(GET, then 0.5 s sleeps, as computenode/client.py did). A trivial Noop job, rounds interleaved.

    .venv/bin/python bench/wait_bench.py [-n 50]

The node runs as its own process (`computenode run`); this script is the client.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from computenode.client import TERMINAL_JOB_STATES, NodeClient  # noqa: E402

JOB = b'{"Spec": {"Engine": "Noop", "Publisher": "Noop"}}'
OLD_POLL_S = 0.5


def old_wait(client: NodeClient, job_id: str) -> None:
    while client.job(job_id).get("State") not in TERMINAL_JOB_STATES:
        time.sleep(OLD_POLL_S)


def one(client: NodeClient, long_poll: bool) -> float:
    start = time.perf_counter()
    job_id = client.submit(JOB)["JobID"]
    if long_poll:
        client.wait(job_id)
    else:
        old_wait(client, job_id)
    return time.perf_counter() - start


def start_node(root: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "COMPUTENODE_ENGINES__NOOP__ENABLED": "true",
        "COMPUTENODE_ENGINES__DOCKER__ENABLED": "false",
    }
    # `-m` from the repository root: the node runs this checkout's code, as the client does.
    cmd = [sys.executable, "-m", "computenode.cli", "run", "--listen", f"127.0.0.1:{port}",
           "--data-dir", str(root / "node")]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.terminate()
    raise SystemExit("the node did not become ready in 30 s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=50)
    ap.add_argument("--port", type=int, default=18234)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_node(Path(tmp), args.port)
        try:
            with NodeClient(f"http://127.0.0.1:{args.port}") as client:
                one(client, True)  # warm-up
                times: dict[bool, list[float]] = {True: [], False: []}
                for _ in range(args.n):
                    for long_poll in (True, False):
                        times[long_poll].append(one(client, long_poll))
        finally:
            proc.terminate()
            proc.wait(30)
    for long_poll, name in ((True, "long poll"), (False, f"polling every {OLD_POLL_S:g} s")):
        t = sorted(times[long_poll])
        print(f"{name:22} n={len(t)}  min {t[0] * 1000:7.1f} ms  p50 {statistics.median(t) * 1000:7.1f} ms"
              f"  max {t[-1] * 1000:7.1f} ms")  # fmt: skip
    ratio = statistics.median(times[False]) / statistics.median(times[True])
    print(f"p50 ratio polling / long poll: {ratio:.0f}x")


if __name__ == "__main__":
    main()
