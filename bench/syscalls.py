"""File and write syscalls the node makes per trivial WASM job, counted by strace.

    .venv/bin/python bench/syscalls.py [-n 200]

Starts `computenode run`, waits until it is ready and has run one job (the module is then
compiled and cached), attaches `strace -f -c -e trace=file,write` to every thread of it,
submits n hello-wasm jobs one after another over HTTP, detaches and prints strace's table
and the calls per job. Needs strace (apt-get install strace) and ptrace rights.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._node import NodeProcess, hello_job, submit, wait_job  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--trace", default="file,write", help="strace -e trace= classes")
    args = ap.parse_args()
    node = NodeProcess()
    job = hello_job()
    out = Path(tempfile.mkdtemp(prefix="strace-")) / "summary"
    try:
        with httpx.Client(base_url=node.url, timeout=60) as http:
            wait_job(http, submit(http, job))  # compiles and caches the module: not counted
            cmd = ["strace", "-f", "-c", "-e", f"trace={args.trace}", "-o", str(out), "-p", str(node.pid)]
            tracer = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
            time.sleep(1.0)  # strace attaches to each thread before the first job
            for _ in range(args.n):
                body = wait_job(http, submit(http, job))
                assert body["State"] == "Completed", body
            time.sleep(0.5)  # the last job's clean-up (work dir removal) runs after Completed
            tracer.send_signal(signal.SIGINT)
            tracer.wait(30)
    finally:
        node.stop()
    table = out.read_text()
    print(table)
    print(f"per job (n={args.n}):")
    for line in table.splitlines():
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
        if m and m.group(2) != "total":
            print(f"  {m.group(2):12s} {int(m.group(1)) / args.n:7.2f}")
        elif m:
            print(f"  {'total':12s} {int(m.group(1)) / args.n:7.2f}")


if __name__ == "__main__":
    main()
