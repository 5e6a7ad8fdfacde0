"""URL fetch: URLStorage against curl, 1 GiB over loopback (throughput ratio, peak RSS).

    .venv/bin/python bench/url_bench.py [--size-mib 1024] [--runs 3]

A separate aiohttp process serves a sparse file with sendfile, so the server is
not the bottleneck; each client runs in its own process and its peak RSS is
sampled with psutil. Goal: ours >= 0.9 of curl, memory flat.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
SERVER = """
import sys
from aiohttp import web
async def serve(request): return web.FileResponse(sys.argv[1])
app = web.Application(); app.router.add_get("/{name}", serve)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=None, access_log=None)
"""
CLIENT = """
import asyncio, sys, time
sys.path.insert(0, sys.argv[3])
from pathlib import Path
from computenode.config import URLConfig
from computenode.model import StorageSpec
from computenode.storage.url import URLStorage
async def main():
    s = URLStorage(URLConfig(max_size=1 << 40, fetch_timeout=3600))
    start = time.perf_counter()
    await s.prepare(StorageSpec(url=sys.argv[1], path="/in"), Path(sys.argv[2]))
    print(time.perf_counter() - start)  # the fetch alone, without interpreter start-up and imports
    await s.aclose()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_measured(cmd: list[str]) -> tuple[float, int]:
    """(seconds, peak RSS bytes) of a command, RSS sampled every 10 ms.

    A command that prints a number of seconds reports its own fetch time (ours:
    Python start-up and imports take 1-2 s that a daemon pays once); curl's is
    its wall time.
    """
    start = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, proc.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.01)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed with {proc.returncode}")
    out = proc.stdout.read().strip() if proc.stdout else b""
    return (float(out) if out else elapsed), peak


def wait_for(port: int) -> None:
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit("server did not start")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        src = Path(tmp) / "big.bin"
        with open(src, "wb") as f:
            f.truncate(size)  # sparse: the server reads it from memory, not disk
        port = free_port()
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(src), str(port)])
        try:
            wait_for(port)
            url = f"http://127.0.0.1:{port}/big.bin"
            results: dict[str, list[tuple[float, int]]] = {"curl": [], "computenode": []}
            for _ in range(args.runs):
                for name in results:
                    dest = Path(tmp) / "dl"
                    dest.mkdir()
                    cmd = (
                        ["curl", "-s", "-f", "-o", str(dest / "big.bin"), url]
                        if name == "curl"
                        else [sys.executable, "-c", CLIENT, url, str(dest), str(ROOT)]
                    )
                    results[name].append(run_measured(cmd))
                    shutil.rmtree(dest)
                    os.sync()  # the next run does not pay for this one's dirty pages
        finally:
            server.terminate()
            server.wait()
    report(results, size)


def report(results: dict[str, list[tuple[float, int]]], size: int) -> None:
    med = {name: statistics.median(t for t, _ in runs) for name, runs in results.items()}
    for name, runs in results.items():
        peak = max(p for _, p in runs)
        print(
            f"{name:12s} median {med[name]:6.2f} s  {size / med[name] / 2**20:7.1f} MiB/s  peak RSS {peak >> 20} MiB"
        )
    print(f"throughput ratio computenode/curl: {med['curl'] / med['computenode']:.2f} (goal >= 0.9)")


if __name__ == "__main__":
    main()
