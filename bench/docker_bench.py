"""A Docker `true` job through a real node over HTTP, against plain `docker run --rm IMAGE true`.

    .venv/bin/python bench/docker_bench.py [--rounds 5] [-n 6] [--batch 100] [--parallel 8]
                                           [--image computenode-test/busybox:latest] [--engine-api]

The node is a separate `computenode run` process (bench/_node.py) with the Docker engine on;
this process is only its client: POST /api/v1/jobs, then GET /api/v1/jobs/{id}?wait=10s (a
long poll) until the job is terminal. The reference is the docker CLI with no extra flags
(`--network none` alone adds ~70 ms, which flattered the node).

Latency: per round, n jobs one after another through the node, then n `docker run --rm`;
rounds alternate so both see the same engine and machine load. Wall-clock per job with
perf_counter around the whole operation (submit to terminal seen; process start to exit).
Goal: node p50 <= 0.9x the CLI's.

`--engine-api` adds a third side, interleaved the same way: the Engine API alone from this
process (aiodocker: create, attach, start, wait, as the node calls them; the removal after the
clock stops, as the node removes off the job's path), the least any client of the engine pays:
the node's own cost is its distance from this side.

Throughput (--batch > 0): per round, `batch` jobs with `parallel` client threads each
submitting and waiting in turn, against `xargs -P<parallel>` running `docker run --rm` `batch`
times; rounds alternate. Goal: node jobs/s >= 1.1x the CLI's.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiodocker
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._node import NodeProcess, docker_true_job, spread, submit, wait_job  # noqa: E402


def one_job(http: httpx.Client, image: str) -> float:
    start = time.perf_counter()
    body = wait_job(http, submit(http, docker_true_job(image)))
    elapsed = time.perf_counter() - start
    assert body["State"] == "Completed", body
    return elapsed


def one_cli(image: str) -> float:
    start = time.perf_counter()
    subprocess.run(["docker", "run", "--rm", image, "true"], check=True)
    return time.perf_counter() - start


def batch_node(url: str, image: str, batch: int, parallel: int) -> float:
    """Seconds for `batch` jobs, `parallel` clients each with its own connection."""
    clients = [httpx.Client(base_url=url, timeout=120) for _ in range(parallel)]
    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(lambda i: one_job(clients[i % parallel], image), range(batch)))
        return time.perf_counter() - start
    finally:
        for c in clients:
            c.close()


class EngineAPI:
    """`true` containers through the Engine API alone, on a loop of their own."""

    def __init__(self, image: str) -> None:
        self.runner = asyncio.Runner()
        self.docker = self.runner.run(self._client())
        self.config = {
            "Image": image,
            "Entrypoint": ["true"],
            "Cmd": [],
            "AttachStdout": True,
            "AttachStderr": True,
            "NetworkDisabled": True,
            "HostConfig": {"NetworkMode": "none", "LogConfig": {"Type": "none", "Config": {}}},
        }

    @staticmethod
    async def _client() -> aiodocker.Docker:
        return aiodocker.Docker()

    async def _one(self) -> float:
        start = time.perf_counter()
        container = await self.docker.containers.create(self.config)
        async with container.attach(stdout=True, stderr=True) as stream:
            await container.start()
            await container.wait()
            while await stream.read_out() is not None:
                pass
        elapsed = time.perf_counter() - start
        await container.delete(force=True)
        return elapsed

    def one(self) -> float:
        return self.runner.run(self._one())

    def batch(self, batch: int, parallel: int) -> float:
        async def worker(left: list[int]) -> None:
            while left:
                left.pop()
                await self._one()

        async def run() -> float:
            left = list(range(batch))
            start = time.perf_counter()
            await asyncio.gather(*(worker(left) for _ in range(parallel)))
            return time.perf_counter() - start

        return self.runner.run(run())

    def close(self) -> None:
        self.runner.run(self.docker.close())
        self.runner.close()


def batch_cli(image: str, batch: int, parallel: int) -> float:
    start = time.perf_counter()
    subprocess.run(
        ["xargs", f"-P{parallel}", "-n1", "sh", "-c", f'exec docker run --rm "{image}" true', "sh"],
        input="\n".join(str(i) for i in range(batch)).encode(),
        check=True,
    )
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("-n", type=int, default=6, help="jobs per round and side, one at a time")
    ap.add_argument("--batch", type=int, default=100, help="jobs per throughput round (0: skip)")
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--throughput-rounds", type=int, default=3)
    ap.add_argument("--image", default="computenode-test/busybox:latest")
    ap.add_argument("--engine-api", action="store_true", help="also time the Engine API alone (no node)")
    args = ap.parse_args()
    node = NodeProcess(docker=True)
    api = EngineAPI(args.image) if args.engine_api else None
    ours: list[float] = []
    cli: list[float] = []
    raw: list[float] = []
    node_rates: list[float] = []
    cli_rates: list[float] = []
    raw_rates: list[float] = []
    try:
        with httpx.Client(base_url=node.url, timeout=120) as http:
            one_job(http, args.image)  # warm-up: engine connection, image present
            one_cli(args.image)
            if api:
                api.one()
            for _ in range(args.rounds):
                ours.extend(one_job(http, args.image) for _ in range(args.n))
                cli.extend(one_cli(args.image) for _ in range(args.n))
                if api:
                    raw.extend(api.one() for _ in range(args.n))
        if args.batch:
            for _ in range(args.throughput_rounds):
                node_rates.append(args.batch / batch_node(node.url, args.image, args.batch, args.parallel))
                cli_rates.append(args.batch / batch_cli(args.image, args.batch, args.parallel))
                if api:
                    raw_rates.append(args.batch / api.batch(args.batch, args.parallel))
    finally:
        node.stop()
        if api:
            api.close()
    print(f"latency: {args.rounds} rounds x {args.n} jobs each side, interleaved, image {args.image}")
    print(f"node over HTTP  {spread(ours)}")
    print(f"docker run      {spread(cli)}")
    if raw:
        print(
            f"Engine API      {spread(raw)}  ({statistics.median(raw) / statistics.median(cli):.2f} of the CLI)"
        )
    ratio = statistics.median(ours) / statistics.median(cli)
    print(f"ratio node/CLI (medians): {ratio:.2f}  (goal <= 0.9)")
    if node_rates:
        print(f"throughput: {args.throughput_rounds} rounds x {args.batch} jobs, {args.parallel} at a time")
        print(f"node over HTTP  {spread(node_rates, 1, 'jobs/s')}")
        print(f"xargs -P{args.parallel}       {spread(cli_rates, 1, 'jobs/s')}")
        if raw_rates:
            share = statistics.median(raw_rates) / statistics.median(cli_rates)
            print(f"Engine API      {spread(raw_rates, 1, 'jobs/s')}  ({share:.2f}x the CLI)")
        rate_ratio = statistics.median(node_rates) / statistics.median(cli_rates)
        print(f"ratio node/CLI (median jobs/s): {rate_ratio:.2f}  (goal >= 1.1)")


if __name__ == "__main__":
    main()
