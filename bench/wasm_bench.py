"""WasmExecutor against bare wasmtime-py: cold ratio, cache-hit latency, jobs per second.

    .venv/bin/python bench/wasm_bench.py [-n 200] [--module tests/wasm/build/hello.wasm]

Bare = compile + instantiate + run `_start` with WASI stdout to a file, in this process;
bare cached = the same with the module compiled once and kept (the reference at its best,
against which the executor's cache hits are compared).
Cold = one executor job with an empty module cache (it compiles, writes the artifact).
Cache hits and bare cached runs alternate; each side is wall-clock per call with perf_counter.
Goals: cold <= 1.5x bare, cache-hit p50 <= 15 ms, >= 100 jobs/s.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from wasmtime import Config, Engine, Linker, Module

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._node import run_wasi, spread  # noqa: E402
from computenode.config import WasmConfig  # noqa: E402
from computenode.executors.base import ExecutionRequest, InputVolume  # noqa: E402
from computenode.executors.wasm import WasmExecutor  # noqa: E402
from computenode.executors.wasm_cache import ModuleCache  # noqa: E402
from computenode.model import ResourceUsageData, Spec, StorageSpec  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def bare_run(engine: Engine, wasm: bytes | Module, out_dir: Path) -> None:
    module = wasm if isinstance(wasm, Module) else Module(engine, wasm)
    linker = Linker(engine)
    linker.define_wasi()
    run_wasi(engine, linker, module, out_dir)


def request(tmp: Path, module: Path, i: int) -> ExecutionRequest:
    results = tmp / f"r{i}"
    results.mkdir()
    spec = Spec.model_validate(
        {"Engine": "Wasm", "Wasm": {"EntryModule": {"StorageSource": "Inline", "URL": "data:,m"}}}
    )
    return ExecutionRequest(
        execution_id=f"e{i}",
        job_id="bench",
        shard_index=0,
        node_id="bench",
        spec=spec,
        inputs=(),
        results_dir=results,
        resources=ResourceUsageData(memory=64 * 2**20),
        timeout_s=60,
        entry_module=InputVolume(StorageSpec(), module, "/"),
    )


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def bench(n: int, module: Path, concurrency: int) -> None:
    wasm = module.read_bytes()
    tmp = Path(tempfile.mkdtemp(prefix="wasm-bench-"))
    config = Config()
    config.epoch_interruption = True
    engine = Engine(config)
    cold_n = max(5, n // 10)

    bare = []
    for i in range(cold_n):
        d = tmp / f"bare{i}"
        d.mkdir()
        t = time.perf_counter()
        bare_run(engine, wasm, d)
        bare.append(time.perf_counter() - t)

    ex = WasmExecutor(WasmConfig(), tmp / "cache")
    count = 0
    cold = []
    for i in range(cold_n):
        ex.cache = ModuleCache(ex.engine, tmp / f"cold-cache{i}", ex.cfg.cache_size)  # empty: it compiles
        count += 1
        req = request(tmp, module, count)
        t = time.perf_counter()
        await ex.run(req)
        cold.append(time.perf_counter() - t)

    hits = []
    cached = []
    compiled = Module(engine, wasm)
    for _ in range(n):
        count += 1
        req = request(tmp, module, count)
        t = time.perf_counter()
        await ex.run(req)
        hits.append(time.perf_counter() - t)
        d = tmp / f"cached{count}"
        d.mkdir()
        t = time.perf_counter()
        bare_run(engine, compiled, d)
        cached.append(time.perf_counter() - t)

    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await ex.run(request(tmp, module, i))

    t = time.perf_counter()
    await asyncio.gather(*(one(count + 1 + i) for i in range(n)))
    elapsed = time.perf_counter() - t
    await ex.aclose()

    print(f"module {module.name} ({len(wasm)} bytes), n={n}, cold samples={cold_n}")
    print(f"bare compile+instantiate+run  p50 {median_ms(bare):7.2f} ms")
    print(f"executor cold (compiles)      p50 {median_ms(cold):7.2f} ms")
    print(f"cold ratio                        {median_ms(cold) / median_ms(bare):7.2f} x   (goal <= 1.5)")
    p90 = statistics.quantiles(hits, n=10)[-1] * 1000
    print(f"executor cache hit            p50 {median_ms(hits):7.2f} ms  p90 {p90:.2f} ms (goal p50 <= 15)")
    print(f"  executor cache hit  {spread(hits)}")
    print(f"  bare, module cached {spread(cached)}")
    print(f"  ratio (medians)     {statistics.median(hits) / statistics.median(cached):.1f}")
    print(f"throughput, {concurrency} concurrent        {n / elapsed:7.1f} jobs/s   (goal >= 100)")
    print(f"bare cached, one thread           {n / sum(cached):7.1f} runs/s   (its ceiling here)")
    print(f"cache: compilations={ex.cache.compilations} hits={ex.cache.hits}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=200, help="jobs per measurement")
    p.add_argument("--module", type=Path, default=REPO / "tests/wasm/build/hello.wasm")
    p.add_argument("--concurrency", type=int, default=4)
    args = p.parse_args()
    if not args.module.is_file():
        raise SystemExit(f"{args.module} is missing: run tests/wasm/build.sh")
    asyncio.run(bench(args.n, args.module, args.concurrency))


if __name__ == "__main__":
    main()
