"""IPFS fetch: IPFSStorage.prepare against `ipfs get`, same CID, same kubo (throughput ratio).

    .venv/bin/python bench/ipfs_bench.py [--size-mib 1024] [--runs 3] [--case file|directory]

Needs the test bed's kubo (scripts/testbed.sh up; COMPUTENODE_TEST_IPFS_API,
IPFS_PATH). Two cases: one large file (ours: `cat` streamed to disk) and a
directory of 64 files (ours: `ls`, then `cat` of a few files at once). Each
run starts from an empty cache; the two tools alternate. Goal: ours >= 0.9 of
`ipfs get`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from computenode.config import IPFSConfig  # noqa: E402
from computenode.model import StorageSpec  # noqa: E402
from computenode.storage.ipfs import IPFSStorage  # noqa: E402

API = os.environ.get("COMPUTENODE_TEST_IPFS_API", "/ip4/127.0.0.1/tcp/5101")
IPFS = os.environ.get("COMPUTENODE_TEST_IPFS_BIN", str(Path.home() / ".cache/computenode/bin/ipfs"))
os.environ.setdefault("IPFS_PATH", "/var/tmp/computenode-testbed/ipfs/repo")


def add(path: Path) -> str:
    out = subprocess.run([IPFS, "add", "-Q", "-r", "--pin=false", str(path)], check=True, capture_output=True)
    return out.stdout.decode().strip()


def make_inputs(tmp: Path, size: int, cases: list[str]) -> dict[str, str]:
    cids = {}
    if "file" in cases:
        single = tmp / "single.bin"
        with open(single, "wb") as f:
            for _ in range(size >> 20):
                f.write(os.urandom(1 << 20))  # random: kubo dedups identical blocks
        cids["file"] = add(single)
        single.unlink()
    if "directory" in cases:
        folder = tmp / "folder"
        folder.mkdir()
        for i in range(64):
            (folder / f"{i:02d}.bin").write_bytes(os.urandom(size // 64))
        cids["directory"] = add(folder)
        shutil.rmtree(folder)
    return cids


def ipfs_get(cid: str, dest: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [IPFS, "get", "--progress=false", "-o", str(dest / cid), cid], check=True, capture_output=True
    )
    return time.perf_counter() - start


async def ours(cid: str, dest: Path) -> float:
    storage = IPFSStorage(IPFSConfig(api=API, cache_size=1 << 40), dest / "cache")
    start = time.perf_counter()
    await storage.prepare(StorageSpec(cid=cid, path="/in"), dest)
    elapsed = time.perf_counter() - start
    await storage.aclose()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--case", choices=["file", "directory"], action="append", help="default: both")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir="/var/tmp") as t:
        tmp = Path(t)
        cids = make_inputs(tmp, args.size_mib << 20, args.case or ["file", "directory"])
        for case, cid in cids.items():
            times: dict[str, list[float]] = {"ipfs get": [], "computenode": []}
            for _ in range(args.runs):
                for name in times:
                    dest = tmp / "out"
                    dest.mkdir()
                    times[name].append(
                        ipfs_get(cid, dest) if name == "ipfs get" else asyncio.run(ours(cid, dest))
                    )
                    shutil.rmtree(dest)
                    os.sync()
            med = {n: statistics.median(v) for n, v in times.items()}
            mib = args.size_mib
            print(
                f"{case:9s} ipfs get {med['ipfs get']:6.2f} s ({mib / med['ipfs get']:6.1f} MiB/s)  "
                f"computenode {med['computenode']:6.2f} s ({mib / med['computenode']:6.1f} MiB/s)  "
                f"ratio {med['ipfs get'] / med['computenode']:.2f} (goal >= 0.9)"
            )


if __name__ == "__main__":
    main()
