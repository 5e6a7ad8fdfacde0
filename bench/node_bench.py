"""A trivial WASM job through a real node over HTTP, against bare wasmtime-py at its best.

    .venv/bin/python bench/node_bench.py [--rounds 5] [-n 40]

The node is a separate `computenode run` process (bench/_node.py); this process is only its
client: submit, then GET the job (`?wait=` where the node long-polls) until Completed.
The reference runs in this process: the module compiled once and kept (a cache hit),
a new Store, WASI with stdout/stderr to files, instantiate, `_start`. Both are wall-clock
time per job with perf_counter; rounds alternate node and reference, so both see the same
machine load. Prints min/median/max of the per-job times, the ratio of the medians and the
node's CPU time per job (psutil on the node's pid, over its rounds only).
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from wasmtime import Config, Engine, Linker, Module

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._node import NodeProcess, hello_job, pct, run_wasi, spread, submit, wait_job  # noqa: E402


def module_bytes(job: dict[str, object]) -> bytes:
    url = job["Spec"]["Wasm"]["EntryModule"]["URL"]  # type: ignore[index]
    return base64.b64decode(str(url).split(",", 1)[1])


class Bare:
    """wasmtime-py alone with the compiled module cached: what one job costs the engine."""

    def __init__(self, wasm: bytes, out: Path) -> None:
        config = Config()
        config.epoch_interruption = True
        self.engine = Engine(config)
        self.module = Module(self.engine, wasm)
        self.linker = Linker(self.engine)
        self.linker.define_wasi()
        self.out = out

    def run(self) -> None:
        run_wasi(self.engine, self.linker, self.module, self.out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("-n", type=int, default=40, help="jobs per round and side")
    args = ap.parse_args()
    job = hello_job()
    bare = Bare(module_bytes(job), Path(tempfile.mkdtemp(prefix="node-bench-")))
    node = NodeProcess()
    ours: list[float] = []
    ref: list[float] = []
    cpu = 0.0
    try:
        with httpx.Client(base_url=node.url, timeout=60) as http:
            wait_job(http, submit(http, job))  # the first job compiles the module: not counted
            bare.run()
            for _ in range(args.rounds):
                c0 = node.cpu_seconds()
                for _ in range(args.n):
                    t = time.perf_counter()
                    body = wait_job(http, submit(http, job))
                    ours.append(time.perf_counter() - t)
                    assert body["State"] == "Completed", body
                cpu += node.cpu_seconds() - c0
                for _ in range(args.n):
                    t = time.perf_counter()
                    bare.run()
                    ref.append(time.perf_counter() - t)
            rss = node.rss()
    finally:
        node.stop()
    print(f"{args.rounds} rounds x {args.n} jobs each side, interleaved; hello-wasm without outputs")
    print(f"node over HTTP  {spread(ours)}  p99 {pct(ours, 99) * 1e3:7.2f} ms")
    print(f"bare wasmtime   {spread(ref)}  p99 {pct(ref, 99) * 1e3:7.2f} ms")
    ratio = statistics.median(ours) / statistics.median(ref)
    print(f"ratio node/bare (medians) {ratio:.1f}; node CPU per job {cpu / len(ours) * 1e3:.2f} ms")
    print(f"node RSS after the run {rss / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
