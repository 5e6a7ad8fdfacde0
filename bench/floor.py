"""The floor: what the least a Python node can do per trivial WASM job costs here, next to the node.

    .venv/bin/python bench/floor.py [--rounds 3] [-n 100]

The "floor server" (this file run with `--serve`, a separate process) does only the steps the
issue's own rules make necessary, each in the cheapest plain way, and nothing else: no model
validation, bidding, capacity, logs, metrics, events bus or job history.

1. `POST /jobs`: the body parsed with json.loads, the module decoded from its data: URL;
2. one commit: the job and its execution, accepted (sqlite, WAL, synchronous=NORMAL, one
   writer thread, as the node's store);
3. one commit: Running (persist first, act second);
4. the run: wasmtime-py, module compiled once and kept, a new Store and WASI with stdout and
   stderr to files of a per-execution results dir, then exitCode written (one worker thread);
5. one commit: result proposed, verified, Publishing;
6. the publish: a tar.gz of the results dir (the default Local publisher's work), in a thread;
7. one commit: Completed, and the waiting request woken;
8. `GET /jobs/{id}?wait=`: a long poll answered with the job's state read back from the store.

The client (this process) drives it and a real `computenode run` (bench/_node.py) the same
way, rounds alternating: httpx, submit then `?wait=10s` until Completed, perf_counter around
the two; CPU per job from psutil on each server's pid over its own rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._node import NodeProcess, free_port, hello_job, pct, run_wasi, spread, submit, wait_job  # noqa: E402


class FloorServer:
    """Steps 1-8 of the module docstring, nothing more; one writer thread and one run thread."""

    def __init__(self, root: Path, inline: bool) -> None:
        from wasmtime import Config, Engine, Linker

        self.root = root
        self.inline = inline  # every step on the loop thread: the work alone, no thread hand-offs
        self.db_thread = ThreadPoolExecutor(1, thread_name_prefix="db")
        self.run_thread = ThreadPoolExecutor(1, thread_name_prefix="run")
        self.db = sqlite3.connect(root / "floor.db", check_same_thread=False, isolation_level=None)
        self.db.executescript(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, spec TEXT, state TEXT, result TEXT);"
            "CREATE TABLE executions (id TEXT PRIMARY KEY, job_id TEXT, state TEXT);"
        )
        config = Config()
        config.epoch_interruption = True
        self.engine = Engine(config)
        self.linker = Linker(self.engine)
        self.linker.define_wasi()
        self.modules: dict[bytes, Any] = {}
        self.done: dict[str, asyncio.Event] = {}

    async def _db(self, sql: list[tuple[str, tuple[object, ...]]]) -> None:
        def write() -> None:
            self.db.execute("BEGIN")
            for statement, args in sql:
                self.db.execute(statement, args)
            self.db.execute("COMMIT")

        await self._call(self.db_thread, write)

    async def _call(self, pool: ThreadPoolExecutor | None, fn: Any, *args: Any) -> Any:
        if self.inline:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def _state(self, job_id: str) -> str:
        def read() -> str:
            row = self.db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return str(row[0]) if row else ""

        return str(await self._call(self.db_thread, read))

    def _run(self, wasm: bytes, results: Path) -> None:
        from wasmtime import Module

        module = self.modules.get(wasm)
        if module is None:
            module = self.modules[wasm] = Module(self.engine, wasm)
        results.mkdir(parents=True)
        run_wasi(self.engine, self.linker, module, results)
        (results / "exitCode").write_text("0")

    def _archive(self, results: Path) -> None:
        with tarfile.open(results.parent / "results.tar.gz", "w:gz") as tar:
            tar.add(results, arcname=".")

    async def _execute(self, job_id: str, ex_id: str, wasm: bytes) -> None:
        results = self.root / ex_id / "results"
        await self._db([("UPDATE executions SET state = 'Running' WHERE id = ?", (ex_id,))])
        await self._call(self.run_thread, self._run, wasm, results)
        await self._db(
            [
                ("UPDATE executions SET state = 'Publishing' WHERE id = ?", (ex_id,)),
                ("UPDATE jobs SET result = ? WHERE id = ?", ("proposal", job_id)),
            ]
        )
        await self._call(None, self._archive, results)
        await self._db(
            [
                ("UPDATE executions SET state = 'Completed' WHERE id = ?", (ex_id,)),
                ("UPDATE jobs SET state = 'Completed' WHERE id = ?", (job_id,)),
            ]
        )
        self.done.pop(job_id).set()

    async def submit(self, request: Any) -> Any:
        from aiohttp import web

        doc = json.loads(await request.read())
        wasm = base64.b64decode(doc["Spec"]["Wasm"]["EntryModule"]["URL"].split(",", 1)[1])
        job_id, ex_id = str(uuid.uuid4()), str(uuid.uuid4())
        await self._db(
            [
                ("INSERT INTO jobs VALUES (?, ?, 'InProgress', '')", (job_id, json.dumps(doc))),
                ("INSERT INTO executions VALUES (?, ?, 'BidAccepted')", (ex_id, job_id)),
            ]
        )
        self.done[job_id] = asyncio.Event()
        task = asyncio.ensure_future(self._execute(job_id, ex_id, wasm))
        task.add_done_callback(lambda t: t.exception())
        return web.json_response({"JobID": job_id})

    async def get(self, request: Any) -> Any:
        from aiohttp import web

        job_id = request.match_info["id"]
        event = self.done.get(job_id)
        if event is not None and "wait" in request.query:
            await asyncio.wait_for(event.wait(), 10)
        return web.json_response({"State": await self._state(job_id)})


def serve(port: int, root: Path, inline: bool) -> None:
    from aiohttp import web

    async def main() -> None:
        server = FloorServer(root, inline)
        app = web.Application()
        app.router.add_post("/api/v1/jobs", server.submit)
        app.router.add_get("/api/v1/jobs/{id}", server.get)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def main() -> None:
    import httpx
    import psutil

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-n", type=int, default=100, help="jobs per round and side")
    ap.add_argument(
        "--inline", action="store_true", help="the floor server does every step on its loop thread (no hops)"
    )
    ap.add_argument("--serve", nargs=2, metavar=("PORT", "DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(int(args.serve[0]), Path(args.serve[1]), args.inline)
        return
    job = hello_job()
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="floor-"))
    floor = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), str(tmp), *(["--inline"] if args.inline else [])],
        stdout=subprocess.PIPE,
        text=True,
    )
    node = NodeProcess()
    times: dict[str, list[float]] = {"floor": [], "node": []}
    cpu = {"floor": 0.0, "node": 0.0}
    split = {"floor": [0.0, 0.0], "node": [0.0, 0.0]}  # user, system
    procs = {"floor": psutil.Process(floor.pid), "node": node.ps}
    try:
        assert floor.stdout is not None and floor.stdout.readline().strip() == "ready"
        clients = {
            "floor": httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60),
            "node": httpx.Client(base_url=node.url, timeout=60),
        }
        for http in clients.values():
            for _ in range(5):  # warm-up: the first job compiles the module
                wait_job(http, submit(http, job))
        for _ in range(args.rounds):
            for side, http in clients.items():
                before = procs[side].cpu_times()
                c0 = before.user + before.system
                split[side][0] -= before.user
                split[side][1] -= before.system
                for _ in range(args.n):
                    t = time.perf_counter()
                    body = wait_job(http, submit(http, job))
                    times[side].append(time.perf_counter() - t)
                    assert body["State"] == "Completed", body
                used = procs[side].cpu_times()
                cpu[side] += used.user + used.system - c0
                split[side][0] += used.user
                split[side][1] += used.system
    finally:
        node.stop()
        floor.terminate()
        floor.wait()
    n = args.rounds * args.n
    mode = "every step on its loop thread" if args.inline else "threads as the node uses them"
    print(
        f"{args.rounds} rounds x {args.n} hello-wasm jobs each side, interleaved, one at a time;"
        f" floor server: {mode}; load {os.getloadavg()[0]:.2f}"
    )
    for side in ("floor", "node"):
        print(
            f"{side:5}  {spread(times[side])}  p99 {pct(times[side], 99) * 1e3:6.2f} ms"
            f"  CPU per job {cpu[side] / n * 1e3:.2f} ms"
            f" (user {split[side][0] / n * 1e3:.2f}, system {split[side][1] / n * 1e3:.2f})"
        )
    ratio = statistics.median(times["node"]) / statistics.median(times["floor"])
    print(f"node/floor: p50 {ratio:.2f}x, CPU {cpu['node'] / cpu['floor']:.2f}x")


if __name__ == "__main__":
    main()
