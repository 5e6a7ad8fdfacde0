"""The node's footprint: idle CPU after a WASM job, RSS after many trivial jobs, and event-loop
stalls over 20 ms, on one real node.

    .venv/bin/python bench/footprint.py [--idle-s 60] [--jobs-s 300] [--procs 2] [--tasks 8]
                                        [--kind noop]

The node runs under bench/_stall_node.py (every loop callback timed; those over 20 ms logged
with their task). In order: the RSS of the fresh node after 5 s; one hello-wasm job; 5 s to
settle, then the node's CPU (psutil user+system of the process) over `--idle-s` with no
work, as % of a core, and each of its threads' CPU over that time; then `--kind` jobs (Noop:
submit, `?wait=` until Completed) from `--procs` client processes of `--tasks` tasks each
(bench/load.py --worker) for `--jobs-s`, the RSS sampled every 5 s against the jobs done so
far; the RSS 10 s after; finally every stall the log holds, the background loops' apart.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._node import REPO, NodeProcess, hello_job, submit, wait_job  # noqa: E402

MiB = 2**20
# Names of the supervisor's loops' tasks (computenode/supervisor.py: loop-<name>) and of tasks
# they start; a stall in one of these is a background loop's.
BACKGROUND = ("loop-", "callbacks-", "cleanup", "reaper", "health")


class _Node(NodeProcess):
    def _node_pid(self, wrapped: bool) -> int:
        return self.proc.pid  # the wrapper is the node itself


def count_done(url: str) -> int:
    """Completed jobs so far, from the node's own counter (/metrics), -1 if it has none."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("computenode_executions{") and 'state="Completed"' in line:
            return int(float(line.rsplit(" ", 1)[1]))
    return -1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--idle-s", type=float, default=60.0)
    ap.add_argument("--jobs-s", type=float, default=300.0)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--kind", default="noop", choices=("noop", "wasm"))
    ap.add_argument("--freeze-after-s", default="", help="gc.freeze() in the node this long after its start")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="footprint-"))
    stalls = tmp / "stalls.jsonl"
    extra = {
        "engines": {"noop": {"enabled": True}},
        "capacity": {"queue": {"cpu": "1000", "memory": "1000Gi"}},
        "logging": {"level": "warning"},  # a line per job would grow the log, not the node
    }
    node = _Node(
        wrapper=(sys.executable, str(REPO / "bench" / "_stall_node.py")),
        extra=extra,
        env={"STALL_LOG": str(stalls), "STALL_MS": "20", "STALL_FREEZE_AFTER_S": args.freeze_after_s},
    )
    idle_at = load_at = load_end = 0.0  # the phases' wall-clock bounds, for the stall report
    try:
        print(f"node ready in {node.ready_s:.2f} s")
        time.sleep(5)
        rss_fresh = node.rss()
        with httpx.Client(base_url=node.url, timeout=60) as http:
            body = wait_job(http, submit(http, hello_job()))
            assert body["State"] == "Completed", body["State"]
        time.sleep(5)
        rss_idle = node.rss()
        threads0 = {t.id: t.user_time + t.system_time for t in node.ps.threads()}
        c0, t0, idle_at = node.cpu_seconds(), time.perf_counter(), time.time()
        time.sleep(args.idle_s)
        c1, t1 = node.cpu_seconds(), time.perf_counter()
        threads1 = {t.id: t.user_time + t.system_time for t in node.ps.threads()}
        idle = (c1 - c0) / (t1 - t0)
        print(f"fresh RSS {rss_fresh / MiB:.1f} MiB; after one WASM job {rss_idle / MiB:.1f} MiB")
        print(
            f"idle CPU over {t1 - t0:.0f} s after a WASM job: {c1 - c0:.3f} s = {idle * 100:.3f}% of a core"
        )
        busy = sorted(((v - threads0.get(k, 0.0), k) for k, v in threads1.items()), reverse=True)
        print("  per thread (native id: CPU s): " + ", ".join(f"{k}: {d:.3f}" for d, k in busy[:6]))
        samples: list[tuple[float, int, int]] = []
        done = threading.Event()

        def sample() -> None:
            start = time.perf_counter()
            while not done.wait(5):
                samples.append((time.perf_counter() - start, count_done(node.url), node.rss()))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        load_at = time.time()
        outs = [tmp / f"w{i}.json" for i in range(args.procs)]
        procs = [
            subprocess.Popen([sys.executable, str(REPO / "bench" / "load.py"), "--worker", args.kind, "--tasks",
                              str(args.tasks), "--url", node.url, "--duration", str(args.jobs_s), "--out", str(out)])
            for out in outs
        ]  # fmt: skip
        for p in procs:
            p.wait()
        done.set()
        sampler.join()
        load_end = time.time()
        jobs = sum(len(json.loads(o.read_text())) for o in outs)
        time.sleep(10)
        rss_after = node.rss()
        for at, n, rss in samples:
            print(f"  {at:6.0f} s  {n:7d} completed  RSS {rss / MiB:6.1f} MiB")
        print(f"{jobs} {args.kind} jobs in {args.jobs_s:.0f} s ({jobs / args.jobs_s:.0f}/s)")
        print(
            f"RSS 10 s after: {rss_after / MiB:.1f} MiB = idle + {(rss_after - rss_idle) / MiB:.1f} MiB"
            f" (fresh + {(rss_after - rss_fresh) / MiB:.1f} MiB)"
        )
        half = [s for s in samples if s[0] >= samples[-1][0] / 2] if samples else []
        if len(half) >= 2 and half[-1][1] > half[0][1]:
            slope = (half[-1][2] - half[0][2]) / (half[-1][1] - half[0][1])
            print(f"RSS slope over the second half: {slope * 1e5 / MiB:.1f} MiB per 100,000 jobs")
    finally:
        node.stop()
    report_stalls(stalls, [("idle", idle_at, load_at - 0.001), ("load", load_at, load_end)])


def report_stalls(path: Path, phases: list[tuple[str, float, float]]) -> None:
    """Callbacks over 20 ms per phase (wall time), grouped by task; the background loops' marked,
    and how many of them also took 20 ms of the loop thread's CPU (work, not contention)."""
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    for phase, start, end in phases:
        got = [r for r in rows if start <= r["at"] <= end]
        by: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for r in got:
            name = r["task"] if r["task"].startswith(("loop-", "<")) else r["task"].split(" ", 1)[-1]
            by[name].append((r["ms"], r["cpu_ms"]))
        on_cpu = sum(1 for r in got if r["cpu_ms"] > 20)
        print(f"{phase}: event-loop callbacks over 20 ms wall: {len(got)} ({on_cpu} over 20 ms of CPU)")
        for name, ms in sorted(by.items(), key=lambda kv: -max(m for m, _ in kv[1]))[:12]:
            tag = " BACKGROUND" if name.startswith(BACKGROUND) else ""
            print(
                f"  {len(ms):5d} x max {max(m for m, _ in ms):7.1f} ms wall, max {max(c for _, c in ms):6.1f} ms CPU"
                f"  {name[:90]}{tag}"
            )


if __name__ == "__main__":
    main()
