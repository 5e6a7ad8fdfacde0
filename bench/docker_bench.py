"""Docker executor against the docker CLI: N runs of `true` in the busybox test image each.

    .venv/bin/python bench/docker_bench.py [--runs 30] [--image computenode-test/busybox:latest]

Runs alternate (executor, CLI, executor, ...) so both see the same engine load. The
executor's figure is one whole run() (create, attach, start, wait, inspect, remove, results
files); the CLI's is plain `docker run --rm IMAGE true` (no extra flags: `--network none`
alone adds ~70 ms, which flattered the executor). Both are wall-clock with perf_counter
around the whole operation. Prints min/median/max and the ratio of medians. Goal: <= 0.9.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._node import spread  # noqa: E402
from computenode.config import DockerConfig  # noqa: E402
from computenode.executors.base import ExecutionRequest  # noqa: E402
from computenode.executors.docker import DockerExecutor  # noqa: E402
from computenode.model import ResourceUsageData, Spec  # noqa: E402


def request(image: str, results: Path, node_id: str) -> ExecutionRequest:
    spec = Spec.model_validate({"Engine": "Docker", "Docker": {"Image": image, "Entrypoint": ["true"]}})
    results.mkdir(parents=True)
    return ExecutionRequest(
        execution_id=uuid.uuid4().hex[:16],
        job_id="bench",
        shard_index=0,
        node_id=node_id,
        spec=spec,
        inputs=(),
        results_dir=results,
        resources=ResourceUsageData(),
        timeout_s=60.0,
    )


async def time_executor(ex: DockerExecutor, image: str, work: Path) -> float:
    req = request(image, work / uuid.uuid4().hex, ex.node_id)
    start = time.perf_counter()
    result = await ex.run(req)
    elapsed = time.perf_counter() - start
    assert result.exit_code == 0, result
    return elapsed


async def time_cli(image: str) -> float:
    start = time.perf_counter()
    proc = await asyncio.create_subprocess_exec("docker", "run", "--rm", image, "true")
    code = await proc.wait()
    elapsed = time.perf_counter() - start
    assert code == 0, f"docker run exited {code}"
    return elapsed


async def main(runs: int, image: str, host: str) -> None:
    ex = DockerExecutor(DockerConfig(host=host), f"bench-{uuid.uuid4().hex[:8]}")
    ours: list[float] = []
    cli: list[float] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            await time_executor(ex, image, Path(tmp))  # warm-up: API version probe, connection pool
            subprocess.run(["docker", "version"], capture_output=True, check=True)
            for _ in range(runs):
                ours.append(await time_executor(ex, image, Path(tmp)))
                cli.append(await time_cli(image))
    finally:
        await ex.aclose()
    ours_median, cli_median = statistics.median(ours), statistics.median(cli)
    print(f"runs: {runs} each, interleaved, image {image}")
    print(f"executor    {spread(ours)}")
    print(f"docker run  {spread(cli)}")
    print(f"ratio executor/CLI (medians): {ours_median / cli_median:.2f}  (goal <= 0.9)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--image", default="computenode-test/busybox:latest")
    parser.add_argument("--host", default="unix:///var/run/docker.sock")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.image, args.host))
