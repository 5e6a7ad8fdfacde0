"""A job's latency while other client processes read back-to-back, against the same job quiet.

    .venv/bin/python bench/readers.py [--rounds 3] [--seconds 6] [--fill 20000]
                                      [--dashboard 2] [--rlist 1] [--list 0] [--healthz 0]

Starts `computenode run` (bench/_node.py), its store filled first with `--fill` completed
executions (bench/store_bench.py's fill: jobs of v0.3 clients c-0..c-9). Each round has a
quiet phase and a loaded one, in alternating order: this process runs hello-wasm jobs one
after another (submit, then `?wait=` until Completed) for `--seconds`; in the loaded phase
the readers are separate client processes (bench/load.py --worker) getting the dashboard `/`,
POST `/requester/list` (client c-1) or `GET /api/v1/executions` back-to-back, started before
the jobs and running past them. Prints per phase the job latency p50/p90/max, the readers'
rate, and the loaded/quiet ratio of the p50 per round with its min/median/max.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import store_bench  # noqa: E402
from bench._node import REPO, NodeProcess, hello_job, pct, submit, wait_job  # noqa: E402

READER_START_S = 1.5  # a reader process's interpreter start-up and imports, before the jobs


def jobs_for(url: str, seconds: float) -> list[float]:
    job, out = hello_job(), []
    with httpx.Client(base_url=url, timeout=60) as http:
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            t = time.perf_counter()
            body = wait_job(http, submit(http, job))
            if body["State"] != "Completed":
                raise SystemExit(f"a job ended {body['State']}")
            out.append(time.perf_counter() - t)
    return out


def with_readers(url: str, seconds: float, readers: list[str]) -> tuple[list[float], dict[str, int]]:
    """The jobs while one process per entry of `readers` reads; the jobs' latencies and the
    reads each kind completed."""
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for i, kind in enumerate(readers):
            out = Path(tmp) / f"{i}.json"
            cmd = [sys.executable, str(REPO / "bench" / "load.py"), "--worker", kind, "--url", url,
                   "--duration", str(seconds + READER_START_S + 1), "--out", str(out)]  # fmt: skip
            procs.append((kind, out, subprocess.Popen(cmd)))
        time.sleep(READER_START_S)
        lat = jobs_for(url, seconds)
        reads: dict[str, int] = {}
        for kind, out, proc in procs:
            if proc.wait() != 0:
                raise SystemExit(f"a {kind} reader exited {proc.returncode}")
            reads[kind] = reads.get(kind, 0) + len(json.loads(out.read_text()))
    return lat, reads


def line(name: str, lat: list[float]) -> str:
    return (
        f"{name:7s} {len(lat):5d} jobs  p50 {pct(lat, 50) * 1e3:7.2f}  p90 {pct(lat, 90) * 1e3:7.2f}"
        f"  max {max(lat) * 1e3:7.2f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--fill", type=int, default=20_000, help="completed executions in the store first")
    ap.add_argument("--dashboard", type=int, default=2)
    ap.add_argument("--rlist", type=int, default=1, help="readers of POST /requester/list")
    ap.add_argument("--list", type=int, default=0, help="readers of GET /api/v1/executions")
    ap.add_argument(
        "--healthz", type=int, default=0, help="readers of /healthz (the cheapest call: a control)"
    )
    args = ap.parse_args()
    readers = ["dashboard"] * args.dashboard + ["rlist"] * args.rlist + ["list"] * args.list
    readers += ["healthz"] * args.healthz

    def prefill(data_dir: Path) -> None:
        if args.fill:
            store_bench.open_store(REPO, data_dir)
            store_bench.fill(data_dir / "computenode.db", args.fill)

    node = NodeProcess(prefill=prefill)
    ratios = []
    try:
        print(f"store: {args.fill} executions; node ready in {node.ready_s:.2f} s; readers {readers}")
        jobs_for(node.url, 0.5)  # compiles the module
        for r in range(args.rounds):
            phases = ["quiet", "loaded"] if r % 2 == 0 else ["loaded", "quiet"]
            got: dict[str, list[float]] = {}
            for phase in phases:
                if phase == "quiet":
                    got[phase] = jobs_for(node.url, args.seconds)
                else:
                    got[phase], reads = with_readers(node.url, args.seconds, readers)
                    print(f"round {r + 1} reads: " + ", ".join(f"{k} {n}" for k, n in reads.items()))
                print(f"round {r + 1} {line(phase, got[phase])}")
            ratio = pct(got["loaded"], 50) / pct(got["quiet"], 50)
            ratios.append(ratio)
            print(f"round {r + 1} loaded/quiet p50 ratio {ratio:.2f}")
    finally:
        node.stop()
    print(
        f"ratio of p50s over {len(ratios)} rounds: min {min(ratios):.2f}  median {statistics.median(ratios):.2f}"
        f"  max {max(ratios):.2f}"
    )


if __name__ == "__main__":
    main()
