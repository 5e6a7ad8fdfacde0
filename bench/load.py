"""A mixed load against a running node: a WASM flood, some Docker jobs, dashboard and list readers.

    .venv/bin/python bench/load.py [--duration 10] [--wasm-clients 50] [--docker-clients 0]
                                   [--dashboard 2] [--listers 1] [--url http://127.0.0.1:1234]
                                   [--procs 4]

Without --url it starts its own `computenode run` (bench/_node.py; Docker enabled only with
--docker-clients). This process is the clients only: asyncio tasks, one HTTP connection each.
Each WASM client submits hello-wasm and waits for Completed (`?wait=` long poll where the node
has it), again and again; Docker clients do the same with `true`; readers GET the dashboard
(`/`) or `/api/v1/executions` back-to-back. First the client's own ceiling: the same number of
tasks against `/healthz` for a few seconds. With `--procs P` the clients are not tasks of
this process: the WASM (and /healthz) clients are split over P client processes and every
reader is a process of its own (this script again, `--worker`), so one client interpreter
is not the ceiling. Prints per kind: count, rate, latency
p50/p90/p99/max; and the node's CPU (psutil, user+system over the run) per job and RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._node import TERMINAL, NodeProcess, docker_true_job, hello_job, pct  # noqa: E402

Op = Callable[[httpx.AsyncClient], Awaitable[None]]
# The cheapest job a node runs (the Noop engine must be enabled): for footprint runs of many jobs.
NOOP_JOB: dict[str, Any] = {
    "APIVersion": "V1beta1",
    "Spec": {"Engine": "Noop", "Verifier": "Noop", "Publisher": "Noop"},
}


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


async def rlist(http: httpx.AsyncClient) -> None:
    """v0.3's `/requester/list` of one client's 10 latest jobs (the v0.3 CLI's default); c-1 is a client of
    bench/store_bench.py's fill (bench/readers.py --fill), none otherwise."""
    (await http.post("/requester/list", json={"client_id": "c-1", "max_jobs": 10})).raise_for_status()


def ops(docker_image: str) -> dict[str, Op]:
    wasm, docker = hello_job(), docker_true_job(docker_image)
    return {
        "wasm": lambda h: run_job(h, wasm),
        "docker": lambda h: run_job(h, docker),
        "dashboard": lambda h: get(h, "/"),
        "list": lambda h: get(h, "/api/v1/executions"),
        "noop": lambda h: run_job(h, NOOP_JOB),
        "rlist": rlist,
        "healthz": lambda h: get(h, "/healthz"),
    }


def in_processes(
    url: str, kinds: dict[str, tuple[int, str]], seconds: float, docker_image: str
) -> dict[str, list[float]]:
    """Like drive(), each (kind, tasks) group of `kinds` in a client process of its own
    (`--worker`); the latencies of every process of a kind together."""
    out: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for i, (label, (n, kind)) in enumerate(kinds.items()):
            path = Path(tmp) / f"{i}.json"
            cmd = [sys.executable, __file__, "--worker", kind, "--tasks", str(n), "--url", url,
                   "--duration", str(seconds), "--out", str(path), "--docker-image", docker_image]  # fmt: skip
            procs.append((label, kind, path, subprocess.Popen(cmd)))
        for _, kind, path, proc in procs:
            if proc.wait() != 0:
                raise SystemExit(f"a {kind} client process exited {proc.returncode}")
            out.setdefault(kind, []).extend(json.loads(path.read_text()))
    return out


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
    ap.add_argument("--procs", type=int, default=0, help="client processes for the WASM clients")
    ap.add_argument("--rlist", type=int, default=0, help="readers of POST /requester/list")
    ap.add_argument("--worker", help=argparse.SUPPRESS)  # one client process: this kind only
    ap.add_argument("--tasks", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        op = ops(args.docker_image)[args.worker]
        got = asyncio.run(drive(args.url, {args.worker: (args.tasks, op)}, args.duration))
        Path(args.out).write_text(json.dumps(got[args.worker]))
        return
    # A queue deep enough for every client's job: a refusal (409 queue full) is not what is measured.
    queue = {"capacity": {"queue": {"cpu": "1000", "memory": "1000Gi"}}}
    node = None if args.url else NodeProcess(docker=args.docker_clients > 0, extra=queue)
    url = args.url or (node.url if node else "")
    ps = node.ps if node else node_by_port(int(url.rsplit(":", 1)[1].strip("/")))
    op = ops(args.docker_image)
    counts = {"wasm": args.wasm_clients, "docker": args.docker_clients, "dashboard": args.dashboard,
              "list": args.listers, "rlist": args.rlist}  # fmt: skip
    counts = {k: n for k, n in counts.items() if n > 0}
    try:
        warm = asyncio.run(drive(url, {"wasm": (1, op["wasm"])}, 0.5))  # compiles the module
        assert warm["wasm"], "the warm-up job did not complete"
        if args.procs:
            split = split_clients(args.wasm_clients, args.procs)
            ceiling = in_processes(url, {f"h{i}": (n, "healthz") for i, n in enumerate(split)}, args.ceiling_s,
                                   args.docker_image)  # fmt: skip
        else:
            ceiling = asyncio.run(drive(url, {"healthz": (args.wasm_clients, op["healthz"])}, args.ceiling_s))
        t0 = ps.cpu_times()
        start = time.perf_counter()
        if args.procs:
            groups: dict[str, tuple[int, str]] = {
                f"wasm{i}": (n, "wasm") for i, n in enumerate(split_clients(args.wasm_clients, args.procs))
            }
            for kind, n in counts.items():
                if kind != "wasm":
                    groups.update({f"{kind}{i}": (1, kind) for i in range(n)})  # a process per reader
            lat = in_processes(url, groups, args.duration, args.docker_image)
        else:
            lat = asyncio.run(drive(url, {k: (n, op[k]) for k, n in counts.items()}, args.duration))
        elapsed = time.perf_counter() - start
        t1 = ps.cpu_times()
        rss = ps.memory_info().rss
    finally:
        if node is not None:
            node.stop()
    cpu = (t1.user + t1.system) - (t0.user + t0.system)
    jobs = len(lat.get("wasm", [])) + len(lat.get("docker", []))
    where = f" in {args.procs} processes (+1 per reader)" if args.procs else ""
    print(f"load for {elapsed:.1f} s: {', '.join(f'{n} {k}' for k, n in counts.items())} clients{where}")
    print(
        f"client ceiling: /healthz from {args.wasm_clients} tasks {len(ceiling['healthz']) / args.ceiling_s:.0f}/s"
    )
    # Client processes drive for --duration each after their own start-up, which `elapsed` holds too.
    report(lat, args.duration if args.procs else elapsed)
    print(
        f"node CPU {cpu / elapsed * 100:.0f}% of a core, {cpu / max(jobs, 1) * 1e3:.2f} ms per job; "
        f"RSS {rss / 2**20:.0f} MiB"
    )


def split_clients(n: int, procs: int) -> list[int]:
    """n client tasks over `procs` processes, as evenly as they go (none empty)."""
    procs = max(1, min(procs, n))
    return [n // procs + (1 if i < n % procs else 0) for i in range(procs)]


def node_by_port(port: int) -> psutil.Process:
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            return psutil.Process(conn.pid)
    raise SystemExit(f"no process listens on port {port} (or it is not ours to inspect)")


if __name__ == "__main__":
    main()
