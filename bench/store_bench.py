"""Read latency through the HTTP API of a node whose store holds many executions.

Fills a fresh store directly (SQLite, one transaction: N executions, one per job, every one
Completed, the jobs spread over a few v0.3 clients), starts `computenode run` on it as its own
process and times, from this process, a default `GET /api/v1/executions` page, one
`/requester/states` of one job and a default `GET /api/v1/jobs` page (when the node has it).

    .venv/bin/python bench/store_bench.py [-n 100000] [-r 50] [--repo DIR]

`--repo` runs the node from another checkout (the figures before a change), with this
script's fill: the rows the schema of that checkout has.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parents[1]
CLIENTS = 10
RUN = "import sys; from computenode.cli import main; sys.exit(main(sys.argv[1:]))"
SHARD_JOB = {
    "APIVersion": "V1beta1",
    "Metadata": {"ID": ""},
    "Spec": {"Engine": "Noop", "Annotations": ["bench"]},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in db.execute(f"PRAGMA table_info({table})")}


def fill(path: Path, n: int) -> str:
    """N completed executions, one per job; the ID of a job of client c-0 in the middle."""
    db = sqlite3.connect(path, isolation_level=None)
    jobs_cols = columns(db, "jobs")
    record = json.dumps(
        {"usage": {"CPU": 0.1, "Memory": 0, "Disk": 0, "GPU": 0}, "callback_url": "", "owned": True,
         "attempt": 0, "comment": "done", "run_output": None, "proposal": "", "published": None,
         "retryable": False, "bid_expires_at": 0.0}
    )  # fmt: skip
    t0 = time.time() - n
    db.execute("BEGIN")
    for i in range(n):
        job_id, ts = f"j-{i:08d}-bench", t0 + i
        doc = dict(SHARD_JOB, Metadata={"ID": job_id})
        row = {"id": job_id, "job": json.dumps(doc), "owned": 1, "client_id": f"c-{i % CLIENTS}",
               "cancelled": 0, "created_at": ts, "updated_at": ts}  # fmt: skip
        if "state" in jobs_cols:
            row["state"] = "Completed"
        db.execute(
            f"INSERT INTO jobs ({','.join(row)}) VALUES ({','.join('?' * len(row))})", tuple(row.values())
        )
        if "job_labels" in tables(db):
            db.execute("INSERT INTO job_labels VALUES (?, 0, 'bench', ?)", (job_id, ts))
        eid = f"e-{i:08d}"
        db.execute(
            "INSERT INTO executions VALUES (?, ?, 0, 'Completed', 4, ?, ?, ?)", (eid, job_id, record, ts, ts)
        )
        for prev, new in ((None, "Created"), ("Created", "BidAccepted"), ("BidAccepted", "Running")):
            db.execute("INSERT INTO history VALUES (?, ?, ?, '', ?)", (eid, prev, new, ts))
    db.execute("COMMIT")
    db.close()
    return f"j-{n // 2 // CLIENTS * CLIENTS:08d}-bench"


_TABLES: dict[int, set[str]] = {}


def tables(db: sqlite3.Connection) -> set[str]:
    if id(db) not in _TABLES:
        _TABLES[id(db)] = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return _TABLES[id(db)]


def open_store(repo: Path, data_dir: Path) -> None:
    """Create the schema of `repo`'s store (every migration) in data_dir/computenode.db."""
    code = (
        "import asyncio,sys;from pathlib import Path;from computenode.store import Store\n"
        "async def m():\n s=Store(Path(sys.argv[1]));await s.open();await s.close()\n"
        "asyncio.run(m())"
    )
    subprocess.run([sys.executable, "-c", code, str(data_dir / "computenode.db")], cwd=repo, check=True)


@contextlib.contextmanager
def node(repo: Path, data_dir: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    config = {
        "node": {"data_dir": str(data_dir)},
        "api": {"listen": f"127.0.0.1:{port}"},
        "engines": {"docker": {"enabled": False}, "wasm": {"enabled": False}, "noop": {"enabled": True}},
        "logging": {"level": "warning"},
    }
    cfg = data_dir / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    log = (data_dir / "node.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-c", RUN, "run", "--config", str(cfg)], cwd=repo,
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def wait_ready(port: int, timeout: float = 60.0) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/readyz")  # ready: the store opened, the loops started
            if conn.getresponse().status == 200:
                conn.close()
                return time.perf_counter() - start
            conn.close()
        time.sleep(0.05)
    raise SystemExit("the node did not start")


def timed(
    conn: http.client.HTTPConnection, method: str, path: str, body: dict | None, rounds: int
) -> list[float]:
    out = []
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data else {}
    for _ in range(rounds):
        start = time.perf_counter()
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        resp.read()
        out.append(time.perf_counter() - start)
        if resp.status != 200:
            return []  # the node has no such call
    return out


def show(name: str, values: list[float]) -> None:
    if not values:
        print(f"{name:<34} (not served)")
        return
    ms = sorted(v * 1000 for v in values)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    print(
        f"{name:<34} min {ms[0]:8.2f}  p50 {statistics.median(ms):8.2f}  p99 {p99:8.2f}  max {ms[-1]:8.2f} ms"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=100_000, help="executions (and jobs) in the store")
    ap.add_argument("-r", "--rounds", type=int, default=50)
    ap.add_argument("--repo", type=Path, default=HERE, help="the checkout whose node runs")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        open_store(args.repo, data_dir)
        start = time.perf_counter()
        job_id = fill(data_dir / "computenode.db", args.n)
        print(f"filled {args.n} executions in {time.perf_counter() - start:.1f} s; node from {args.repo}")
        port = free_port()
        with node(args.repo, data_dir, port):
            print(f"start-up {wait_ready(port):.2f} s")
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            states = {"client_id": f"c-{int(job_id[2:10]) % CLIENTS}", "job_id": job_id}
            calls = [
                ("GET /api/v1/executions", "GET", "/api/v1/executions", None),
                ("GET /api/v1/jobs", "GET", "/api/v1/jobs", None),
                ("POST /requester/states (one job)", "POST", "/requester/states", states),
                (
                    "POST /requester/list (10 jobs)",
                    "POST",
                    "/requester/list",
                    {"client_id": "c-1", "max_jobs": 10},
                ),
            ]
            results: dict[str, list[float]] = {name: [] for name, *_ in calls}
            for _ in range(args.rounds):  # interleaved: one call of each kind per round
                for name, method, path, body in calls:
                    results[name] += timed(conn, method, path, body, 1)
            conn.close()
            for name, values in results.items():
                show(name, values)
        os.sync()


if __name__ == "__main__":
    main()
