"""Bid decisions per second without probes, with p50/p99 latency of one decision.

    .venv/bin/python bench/bid_bench.py [--n 20000] [--concurrency 1]

Each decision is what node.py does per offer: Bidder.evaluate(job) and Bidder.usage(job)
gathered. Jobs are parsed beforehand (parsing is the API's cost). Scenarios: a stateless job,
a job with node selectors and resources, and a job with two inputs on a local directory
(locality=local, so has_locally and size run). Goals: >= 5,000 decisions/s, p99 <= 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from computenode.bidding import Bidder
from computenode.capacity import node_limits
from computenode.config import CapacityConfig, JobSelectionConfig, TimeoutsConfig
from computenode.model import Job, Spec, StorageSource, StorageSpec
from computenode.shards import ShardPlans
from computenode.volume import InputVolume


class DirStorage:
    """Inputs are files under a directory (what a LocalDirectory source does)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def check(self) -> str | None:
        return None

    async def has_locally(self, spec: StorageSpec) -> bool:
        return (self.root / spec.source_path.lstrip("/")).exists()

    async def size(self, spec: StorageSpec) -> int:
        return (self.root / spec.source_path.lstrip("/")).stat().st_size

    async def prepare(self, spec: StorageSpec, workdir: Path) -> InputVolume:
        return InputVolume(spec, self.root / spec.source_path.lstrip("/"), spec.path)

    async def cleanup(self, volume: InputVolume) -> None:
        return None

    async def explode(self, spec: StorageSpec) -> list[StorageSpec]:
        return [spec]


def jobs() -> dict[str, Job]:
    docker = {"Engine": "Docker", "Docker": {"Image": "busybox", "Entrypoint": ["echo", "hi"]}}
    inputs = [
        {"StorageSource": "LocalDirectory", "SourcePath": f"/in{i}", "path": f"/inputs/{i}"} for i in range(2)
    ]
    return {
        "stateless": Job.model_validate({"ID": "j1", "Spec": docker}),
        "selectors+resources": Job.model_validate(
            {
                "ID": "j2",
                "Spec": docker
                | {
                    "Resources": {"CPU": "500m", "Memory": "256Mi"},
                    "Timeout": 300,
                    "NodeSelectors": [
                        {"Key": "zone", "Operator": "in", "Values": ["eu", "us"]},
                        {"Key": "tier", "Operator": "!=", "Values": ["bronze"]},
                    ],
                },
            }
        ),
        "2 local inputs": Job.model_validate({"ID": "j3", "Spec": docker | {"inputs": inputs}}),
    }


class Facts:
    """The node as bidding sees it: fixed labels, every part available, disk fine."""

    def labels(self) -> dict[str, str]:
        return {"zone": "eu", "tier": "gold"}

    async def unavailable(self, spec: Spec) -> list[str]:
        return []

    def low_disk(self) -> str | None:
        return None


async def run(
    bidder: Bidder, job: Job, n: int, concurrency: int
) -> tuple[float, float, list[float], list[float]]:
    """Wall and CPU time of the run; wall and CPU latency of each decision (CPU only meaningful at concurrency 1)."""
    latencies: list[float] = []
    cpu: list[float] = []

    async def one() -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        verdicts, _ = await asyncio.gather(bidder.evaluate(job), bidder.usage(job))
        latencies.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
        assert all(v.ok for v in verdicts), verdicts

    async def worker(count: int) -> None:
        for _ in range(count):
            await one()

    start, cpu_start = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(n // concurrency) for _ in range(concurrency)))
    return time.perf_counter() - start, time.process_time() - cpu_start, latencies, cpu


def pct(values: list[float], p: int) -> float:
    """The p-th percentile in milliseconds."""
    return statistics.quantiles(values, n=100)[p - 1] * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i in range(2):
            (root / f"in{i}").write_bytes(b"x" * 1024)
        storage = {StorageSource.LOCAL_DIRECTORY: DirStorage(root)}
        bidder = Bidder(
            node_id="bench-node",
            selection=JobSelectionConfig(locality="local"),
            timeouts=TimeoutsConfig(),
            limits=node_limits(CapacityConfig(), root),
            facts=Facts(),
            storage=storage,
            plans=ShardPlans(storage),
        )
        # Wall-clock figures include time the OS gave to other processes; the CPU figures (CPU time
        # per decision, decisions per CPU-second) are this code's own and compare across machines' loads.
        print(
            f"decisions={args.n} concurrency={args.concurrency} load={os.getloadavg()[0]:.1f}/{os.cpu_count()} CPUs"
        )
        print(
            f"{'scenario':<22}{'decisions/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'cpu p99 ms':>12}{'per cpu-s':>11}  goal"
        )
        for name, job in jobs().items():
            await run(bidder, job, min(args.n, 1000), args.concurrency)  # warm up
            elapsed, cpu_s, lat, cpu = await run(bidder, job, args.n, args.concurrency)
            rate, p50, p99 = len(lat) / elapsed, pct(lat, 50), pct(lat, 99)
            cpu_p99 = f"{pct(cpu, 99):.3f}" if args.concurrency == 1 else "-"
            met = "met" if rate >= 5000 and p99 <= 5 else "MISSED"
            print(
                f"{name:<22}{rate:>12.0f}{p50:>9.3f}{p99:>9.3f}{cpu_p99:>12}{len(lat) / cpu_s:>11.0f}  {met} (>=5000/s, p99<=5ms)"
            )


if __name__ == "__main__":
    asyncio.run(main())
