"""A mixed load against a running node: a WASM flood, some Docker jobs, dashboard and list readers.

    .venv/bin/python bench/load.py [--duration 10] [--wasm-clients 50] [--docker-clients 0]
                                   [--dashboard 2] [--listers 1] [--url http://127.0.0.1:1234]

Without --url it starts its own `computenode run` (bench/_node.py; Docker enabled only with
--docker-clients). This process is the clients only: asyncio tasks, one HTTP connection each.
Each WASM client submits hello-wasm and waits for Completed (`?wait=` long poll where the node
has it), again and again; Docker clients do the same with `true`; readers GET the dashboard
(`/`) or `/api/v1/executions` back-to-back. First the client's own ceiling: the same number of
tasks against `/healthz` for a few seconds. Prints per kind: count, rate, latency
p50/p90/p99/max; and the node's CPU (psutil, user+system over the run) per job and RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._node import TERMINAL, NodeProcess, docker_true_job, hello_job, pct  # noqa: E402

Op = Callable[[httpx.AsyncClient], Awaitable[None]]


async def run_job(http: httpx.AsyncClient, job: dict[str, Any]) -> None:
    r = await http.post("/api/v1/jobs", json=job)
    r.raise_for_status()
    job_id = r.json()["JobID"]
    while True:
        body = (await http.get(f"/api/v1/jobs/{job_id}", params={"wait": "10s"})).json()
        if body.get("State") in TERMINAL:
            if body["State"] != "Completed":
                raise RuntimeError(f"job {job_id} ended {body['State']}")
            return
        await asyncio.sleep(0.001)


async def get(http: httpx.AsyncClient, path: str) -> None:
    (await http.get(path)).raise_for_status()


async def drive(url: str, kinds: dict[str, tuple[int, Op]], seconds: float) -> dict[str, list[float]]:
    """Each kind's tasks call their op back-to-back until `seconds` passed; latencies per kind."""
    lat: dict[str, list[float]] = {k: [] for k in kinds}
    errors: dict[str, int] = {k: 0 for k in kinds}
    first: dict[str, str] = {}
    stop = time.monotonic() + seconds

    async def client(kind: str, op: Op) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            while time.monotonic() < stop:
                t = time.perf_counter()
                try:
                    await op(http)
                except httpx.HTTPStatusError as exc:
                    errors[kind] += 1
                    first.setdefault(kind, f"{exc.response.status_code} {exc.response.text[:200]}")
                    continue
                except (httpx.HTTPError, RuntimeError) as exc:
                    errors[kind] += 1
                    first.setdefault(kind, repr(exc)[:200])
                    continue
                lat[kind].append(time.perf_counter() - t)

    await asyncio.gather(*(client(k, op) for k, (n, op) in kinds.items() for _ in range(n)))
    for kind, count in errors.items():
        if count:
            print(f"  {kind}: {count} errors, the first: {first.get(kind, '')}")
    return lat


def report(lat: dict[str, list[float]], seconds: float) -> None:
    for kind, values in lat.items():
        if not values:
            print(f"{kind:10s} none completed")
            continue
        print(
            f"{kind:10s} {len(values):6d} done {len(values) / seconds:8.1f}/s  "
            f"p50 {pct(values, 50) * 1e3:7.2f}  p90 {pct(values, 90) * 1e3:7.2f}  "
            f"p99 {pct(values, 99) * 1e3:7.2f}  max {max(values) * 1e3:7.2f} ms"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--wasm-clients", type=int, default=50)
    ap.add_argument("--docker-clients", type=int, default=0)
    ap.add_argument("--docker-image", default="computenode-test/busybox:latest")
    ap.add_argument("--dashboard", type=int, default=2)
    ap.add_argument("--listers", type=int, default=1)
    ap.add_argument("--url", help="a running node; its pid is found by its port for CPU/RSS")
    ap.add_argument("--ceiling-s", type=float, default=3.0)
    args = ap.parse_args()
    # A queue deep enough for every client's job: a refusal (409 queue full) is not what is measured.
    queue = {"capacity": {"queue": {"cpu": "1000", "memory": "1000Gi"}}}
    node = None if args.url else NodeProcess(docker=args.docker_clients > 0, extra=queue)
    url = args.url or (node.url if node else "")
    ps = node.ps if node else node_by_port(int(url.rsplit(":", 1)[1].strip("/")))
    wasm, docker = hello_job(), docker_true_job(args.docker_image)
    try:
        warm = asyncio.run(drive(url, {"wasm": (1, lambda h: run_job(h, wasm))}, 0.5))  # compiles the module
        assert warm["wasm"], "the warm-up job did not complete"
        ceiling = asyncio.run(
            drive(url, {"healthz": (args.wasm_clients, lambda h: get(h, "/healthz"))}, args.ceiling_s)
        )
        kinds: dict[str, tuple[int, Op]] = {
            "wasm": (args.wasm_clients, lambda h: run_job(h, wasm)),
            "docker": (args.docker_clients, lambda h: run_job(h, docker)),
            "dashboard": (args.dashboard, lambda h: get(h, "/")),
            "list": (args.listers, lambda h: get(h, "/api/v1/executions")),
        }
        kinds = {k: v for k, v in kinds.items() if v[0] > 0}
        t0 = ps.cpu_times()
        start = time.perf_counter()
        lat = asyncio.run(drive(url, kinds, args.duration))
        elapsed = time.perf_counter() - start
        t1 = ps.cpu_times()
        rss = ps.memory_info().rss
    finally:
        if node is not None:
            node.stop()
    cpu = (t1.user + t1.system) - (t0.user + t0.system)
    jobs = len(lat.get("wasm", [])) + len(lat.get("docker", []))
    print(f"load for {elapsed:.1f} s: {', '.join(f'{n} {k}' for k, (n, _) in kinds.items())} clients")
    print(
        f"client ceiling: /healthz from {args.wasm_clients} tasks {len(ceiling['healthz']) / args.ceiling_s:.0f}/s"
    )
    report(lat, elapsed)
    print(
        f"node CPU {cpu / elapsed * 100:.0f}% of a core, {cpu / max(jobs, 1) * 1e3:.2f} ms per job; "
        f"RSS {rss / 2**20:.0f} MiB"
    )


def node_by_port(port: int) -> psutil.Process:
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            return psutil.Process(conn.pid)
    raise SystemExit(f"no process listens on port {port} (or it is not ours to inspect)")


if __name__ == "__main__":
    main()
