"""URL fetch: URLStorage.prepare against `curl -o`, 1 GiB over loopback (throughput ratio, peak RSS).

    .venv/bin/python bench/url_bench.py [--size-mib 1024] [--runs 5]

A separate aiohttp process serves a sparse file with sendfile, so the server is not the
bottleneck. Each fetch runs in its own fresh driver process (DRIVER below), and both sides
are timed there the same way: perf_counter from just before the fetch starts until the file
is complete on disk (the call returned, the file closed), so neither side's figure holds
interpreter start-up and imports (a daemon pays those once):

    ours  URLStorage.prepare(StorageSpec(url=...), dir) in the driver's event loop
    curl  subprocess.run(["curl", "-s", "-f", "-o", FILE, URL]) from the driver: curl's
          whole process, its start-up included

Runs alternate (curl, ours, curl, ...). After each run, outside the timing, the file's size
and sha256 are checked against the source's, then the dirty pages are synced so the next run
does not pay for them. The whole driver process's wall time is printed too.

--warm: the ours driver first fetches the file once, untimed, as a running node has: glibc's
malloc thresholds have then adapted to the large read buffers (a fresh process's first large
fetch faults its freed buffers back in, docs/performance.md). curl is always a fresh process.

Memory: the driver's RSS is sampled every 10 ms from this process; for ours the growth is
the peak minus the driver's RSS just before the fetch (which it prints); for curl it is
curl's own peak RSS. Goals: ours >= 0.9x curl's throughput, RSS growth <= 32 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
SERVER = """
import sys
from aiohttp import web
async def serve(request): return web.FileResponse(sys.argv[1])
app = web.Application(); app.router.add_get("/{name}", serve)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=None, access_log=None)
"""
# argv: side (ours | curl), url, dest dir, repo root, warm | cold. Prints JSON lines.
DRIVER = """
import asyncio, json, os, subprocess, sys, time
sys.path.insert(0, sys.argv[4])
from pathlib import Path
import psutil
from computenode.config import URLConfig
from computenode.model import StorageSpec
from computenode.storage.url import URLStorage
side, url, dest, warm = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[5] == "warm"
rss_before = psutil.Process().memory_info().rss
async def ours():
    s = URLStorage(URLConfig(max_size=1 << 40, fetch_timeout=3600))
    if warm:
        (dest / "warm").mkdir()
        await s.prepare(StorageSpec(url=url, path="/in"), dest / "warm")
        subprocess.run(["rm", "-rf", str(dest / "warm")], check=True)
        os.sync()
    start = time.perf_counter()
    volume = await s.prepare(StorageSpec(url=url, path="/in"), dest)
    elapsed = time.perf_counter() - start
    await s.aclose()
    return elapsed, str(volume.host_file)
def curl():
    file = dest / "big.bin"
    start = time.perf_counter()
    subprocess.run(["curl", "-s", "-f", "-o", str(file), url], check=True)
    return time.perf_counter() - start, str(file)
print(json.dumps({"rss_before": rss_before}), flush=True)
elapsed, file = asyncio.run(ours()) if side == "ours" else curl()
print(json.dumps({"seconds": elapsed, "file": file}), flush=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_driver(side: str, url: str, dest: Path, warm: bool) -> dict[str, Any]:
    """The driver's own figures, plus its whole wall time and peak RSS (curl's, for curl)."""
    start = time.perf_counter()
    proc = psutil.Popen(
        [sys.executable, "-c", DRIVER, side, url, str(dest), str(ROOT), "warm" if warm else "cold"],
        stdout=subprocess.PIPE,
    )
    peak = 0
    while proc.poll() is None:
        try:
            procs = [proc] if side == "ours" else proc.children()  # curl: the child alone
            peak = max([peak, *(p.memory_info().rss for p in procs)])
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.01)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"the {side} driver failed with {proc.returncode}")
    out = proc.stdout.read().decode() if proc.stdout else ""
    result: dict[str, Any] = {}
    for line in out.splitlines():
        result |= json.loads(line)
    growth = peak - result["rss_before"] if side == "ours" else peak
    return result | {"wall": wall, "rss_growth": growth}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def wait_for(port: int) -> None:
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit("server did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument(
        "--warm",
        action="store_true",
        help="ours fetches the file once, untimed, before the timed fetch: a daemon that has fetched before",
    )
    args = ap.parse_args()
    size = args.size_mib << 20
    results: dict[str, list[dict[str, Any]]] = {"curl": [], "ours": []}
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        src = Path(tmp) / "big.bin"
        with open(src, "wb") as f:
            f.truncate(size)  # sparse: the server reads it from memory, not disk
        expected = sha256_of(src)
        port = free_port()
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(src), str(port)])
        try:
            wait_for(port)
            url = f"http://127.0.0.1:{port}/big.bin"
            for _ in range(args.runs):
                for side in results:
                    dest = Path(tmp) / "dl"
                    dest.mkdir()
                    run = run_driver(side, url, dest, args.warm)
                    file = Path(run["file"])
                    if file.stat().st_size != size or sha256_of(file) != expected:
                        raise SystemExit(f"{side}: {file} is not the served file")
                    results[side].append(run)
                    shutil.rmtree(dest)
                    os.sync()  # the next run does not pay for this one's dirty pages
        finally:
            server.terminate()
            server.wait()
    report(results, size, args.runs)


def report(results: dict[str, list[dict[str, Any]]], size: int, runs: int) -> None:
    print(
        f"{size >> 20} MiB over loopback, {runs} runs each side, interleaved; files verified (size, sha256)"
    )
    for side, rows in results.items():
        rates = sorted(size / r["seconds"] / 2**20 for r in rows)
        walls = [r["wall"] for r in rows]
        print(
            f"{side:5s} MiB/s min {rates[0]:7.1f} median {statistics.median(rates):7.1f} max {rates[-1]:7.1f}"
            f"  | whole driver process median {statistics.median(walls):5.2f} s"
            f"  | RSS growth max {max(r['rss_growth'] for r in rows) / 2**20:5.1f} MiB"
        )
    ratio = statistics.median(r["seconds"] for r in results["curl"]) / statistics.median(
        r["seconds"] for r in results["ours"]
    )
    print(f"throughput ratio ours/curl (median times): {ratio:.2f}  (goal >= 0.9; RSS growth <= 32 MB)")


if __name__ == "__main__":
    main()
