"""End-to-end latency of a trivial WASM job submitted over HTTP to a node in this process.

Baseline in the same run: the same module through the WasmExecutor alone (no HTTP, store,
scheduler or publishing), so the ratio shows what the node adds around the engine.

    .venv/bin/python bench/node_bench.py [-n 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from computenode.config import Settings, WasmConfig  # noqa: E402
from computenode.executors.base import ExecutionRequest, InputVolume  # noqa: E402
from computenode.executors.wasm import WasmExecutor  # noqa: E402
from computenode.model import Job, ResourceUsageData  # noqa: E402
from computenode.storage.inline import InlineStorage  # noqa: E402
from tests.node.conftest import start_node  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "hello-wasm.yaml"


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def baseline(job: Job, n: int, root: Path) -> list[float]:
    ex = WasmExecutor(WasmConfig(), root / "cache")
    storage = InlineStorage()
    out = []
    try:
        for i in range(n + 1):
            start = time.perf_counter()
            work = root / f"b{i}"
            (work / "results").mkdir(parents=True)
            (work / "module").mkdir()
            module: InputVolume = await storage.prepare(job.spec.wasm.entry_module, work / "module")
            req = ExecutionRequest(f"b{i}", "bench", 0, "bench", job.spec, (), work / "results",
                                   ResourceUsageData(cpu=0.1, memory=64 << 20), 30.0, entry_module=module)  # fmt: skip
            await ex.run(req)
            if i:  # the first run compiles; the node's first job does too, and is dropped the same way
                out.append(time.perf_counter() - start)
    finally:
        await ex.aclose()
    return out


async def through_node(job_doc: dict, n: int, root: Path) -> list[float]:
    settings = Settings(
        node={"id": "n-bench", "data_dir": str(root / "node")}, api={"listen": "127.0.0.1:0"},
        engines={"docker": {"enabled": False}}, job_selection={"locality": "anywhere"},
        retention={"min_free_disk": "1Mi"},
    )  # fmt: skip
    rn = await start_node(settings)
    out = []
    try:
        for i in range(n + 1):
            start = time.perf_counter()
            job_id = (await rn.http.post("/api/v1/jobs", json=job_doc)).json()["JobID"]
            body = await rn.wait_job(job_id)
            assert body["State"] == "Completed", body
            if i:
                out.append(time.perf_counter() - start)
    finally:
        await rn.stop()
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=50)
    args = ap.parse_args()
    doc = yaml.safe_load(EXAMPLE.read_text())
    job = Job.model_validate(doc)
    with tempfile.TemporaryDirectory() as tmp:
        base = await baseline(job, args.n, Path(tmp))
        node = await through_node(doc, args.n, Path(tmp))
    b50, n50 = statistics.median(base) * 1e3, statistics.median(node) * 1e3
    print(f"executor alone : p50 {b50:7.2f} ms  p99 {pct(base, 99) * 1e3:7.2f} ms  (n={len(base)})")
    print(f"node over HTTP : p50 {n50:7.2f} ms  p99 {pct(node, 99) * 1e3:7.2f} ms  (n={len(node)})")
    print(f"ratio node/executor p50: {n50 / b50:.2f}; node adds {n50 - b50:.1f} ms per job")


if __name__ == "__main__":
    asyncio.run(main())
