"""uvloop against asyncio's loop without the node: what a thread hop and an aiohttp request cost.

    .venv/bin/python bench/loop_micro.py [--rounds 3] [--connections 8]

1. hop: `await loop.run_in_executor(pool, int)` (a one-thread pool, as the store's) 20,000
   times, from 1 and from 8 tasks; wall time and process CPU per hop.
2. http: an aiohttp server in a child process on one loop or the other, each request spinning
   150 us of CPU (about what the node spends on a rejected offer), `plain` or with one hop to a
   one-thread pool before answering (`hop`); this process the client, `--connections`
   keep-alive connections; requests per second.
Loops alternate within each round. Needs uvloop (not a dependency of the node: `pip install uvloop`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import aiohttp
from aiohttp import web

try:
    import uvloop
except ImportError:
    sys.exit("bench/loop_micro.py needs uvloop: .venv/bin/pip install 'uvloop>=0.21,<0.22'")

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop] | None] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": None,
}


async def hops(tasks: int, n: int = 20000) -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(1)

    async def worker(k: int) -> None:
        for _ in range(k):
            await loop.run_in_executor(pool, int)

    await worker(1000)
    t, c = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(n // tasks) for _ in range(tasks)))
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    pool.shutdown()
    return wall / n, cpu / n


def spin(seconds: float = 150e-6) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def serve(loop_name: str, port: int) -> None:
    pool = ThreadPoolExecutor(1)

    async def plain(request: web.Request) -> web.Response:
        spin()
        return web.json_response({"ok": True})

    async def hop(request: web.Request) -> web.Response:
        spin()
        await asyncio.get_running_loop().run_in_executor(pool, int)
        return web.json_response({"ok": True})

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/plain", plain)
        app.router.add_get("/hop", hop)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(main())


async def client(url: str, connections: int, n: int = 6000) -> float:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:

        async def worker(k: int) -> None:
            for _ in range(k):
                async with session.get(url) as r:
                    await r.read()

        await worker(200)
        t = time.perf_counter()
        await asyncio.gather(*(worker(n // connections) for _ in range(connections)))
        return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)  # LOOP PORT: the server child
    args = ap.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    for r in range(args.rounds):
        for name, factory in LOOPS.items():
            with asyncio.Runner(loop_factory=factory) as runner:
                one = runner.run(hops(1))
                eight = runner.run(hops(8))
            print(
                f"round {r} {name:7s} hop: 1 task {one[0] * 1e6:5.1f} us wall {one[1] * 1e6:5.1f} us CPU;"
                f" 8 tasks {eight[0] * 1e6:5.1f} us wall {eight[1] * 1e6:5.1f} us CPU",
                flush=True,
            )
        for name in LOOPS:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            server = subprocess.Popen([sys.executable, __file__, "--serve", name, str(port)])
            time.sleep(1.0)
            try:
                rates = {
                    p: asyncio.run(client(f"http://127.0.0.1:{port}/{p}", args.connections))
                    for p in ("plain", "hop")
                }
            finally:
                server.terminate()
                server.wait()
            print(
                f"round {r} {name:7s} http ({args.connections} connections): plain {rates['plain']:,.0f}/s"
                f"  hop {rates['hop']:,.0f}/s  load {os.getloadavg()[0]:.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
