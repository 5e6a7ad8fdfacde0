"""Where a node's CPU goes per trivial WASM job: per thread, user and system, optionally profiled.

    .venv/bin/python bench/node_cpu.py [-n 300] [--profile FILE [--thread-time]] [--strace FILE] [--docker IMAGE]

Starts a real `computenode run` (bench/_node.py, from this checkout) under
bench/_profiled_node.py, runs 5 hello-wasm jobs to warm up, then `-n` jobs one after another
(submit, then `GET /api/v1/jobs/{id}?wait=10s`), and prints each thread's CPU per job (psutil,
threads named as `threading` names them), user and system time per job, p50/min/max wall time
and node CPU per job. `--profile` writes a cProfile of the loop thread (`--thread-time`: its
CPU time, not wall time); `--strace` counts the node's syscalls over the measured jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._node import NodeProcess, docker_true_job, hello_job, submit, wait_job  # noqa: E402


class _Wrapped(NodeProcess):
    def _node_pid(self, wrapped: bool) -> int:
        return self.proc.pid  # the wrapper is the node itself


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--profile", help="cProfile output of the loop thread")
    ap.add_argument("--thread-time", action="store_true", help="profile the loop thread's CPU time")
    ap.add_argument("--strace", help="strace -f -c output over the measured jobs")
    ap.add_argument("--docker", metavar="IMAGE", help="Docker `true` jobs of IMAGE instead of hello-wasm")
    args = ap.parse_args()
    names = Path(tempfile.mkdtemp(prefix="node-cpu-")) / "threads.json"
    os.environ["NODE_CPU_THREADS"] = str(names)
    if args.profile:
        os.environ["NODE_CPU_PROFILE"] = str(Path(args.profile).resolve())
    if args.thread_time:
        os.environ["NODE_CPU_THREAD_TIME"] = "1"
    node = _Wrapped(
        docker=bool(args.docker),
        wrapper=(sys.executable, str(Path(__file__).resolve().parent / "_profiled_node.py")),
    )
    job = docker_true_job(args.docker) if args.docker else hello_job()
    kind = "Docker `true`" if args.docker else "hello-wasm"
    wall: list[float] = []
    try:
        with httpx.Client(base_url=node.url, timeout=60) as http:
            for _ in range(5):
                wait_job(http, submit(http, job))
            tracer = None
            if args.strace:
                tracer = subprocess.Popen(["strace", "-f", "-c", "-o", args.strace, "-p", str(node.pid)])
                time.sleep(1)
            before = {t.id: t.user_time + t.system_time for t in node.ps.threads()}
            t0 = node.ps.cpu_times()
            for _ in range(args.n):
                start = time.perf_counter()
                body = wait_job(http, submit(http, job))
                wall.append(time.perf_counter() - start)
                assert body["State"] == "Completed", body
            t1 = node.ps.cpu_times()
            after = {t.id: t.user_time + t.system_time for t in node.ps.threads()}
            if tracer is not None:
                tracer.send_signal(signal.SIGINT)
                tracer.wait()
            time.sleep(1.1)  # the names file is rewritten every second
            named: dict[str, str] = json.loads(names.read_text()) if names.exists() else {}
    finally:
        node.stop()
    n = args.n
    used = sorted(((after[k] - before.get(k, 0.0), k) for k in after), reverse=True)
    print(f"{n} {kind} jobs one after another, CPU per job by thread:")
    print("  " + "  ".join(f"{named.get(str(k), k)} {v / n * 1e3:.2f} ms" for v, k in used if v > 0))
    user, system = (t1.user - t0.user) / n, (t1.system - t0.system) / n
    print(
        f"user {user * 1e3:.2f} ms  system {system * 1e3:.2f} ms  node CPU per job {(user + system) * 1e3:.2f} ms"
    )
    print(
        f"submit -> Completed: p50 {statistics.median(wall) * 1e3:.2f} ms"
        f"  min {min(wall) * 1e3:.2f} ms  max {max(wall) * 1e3:.2f} ms"
    )


if __name__ == "__main__":
    main()
