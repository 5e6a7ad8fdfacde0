"""The Docker engine going away while a job runs is an engine failure (retryable), never a
finished job with exit code 137: a private dockerd that only this test stops."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from computenode.config import DockerConfig
from computenode.errors import ExecutionFailed
from computenode.executors.docker import DockerExecutor
from tests.executors.test_docker import make_request, make_spec
from tests.operations.test_readiness import PrivateDockerd

REGISTRY_BUSYBOX = "127.0.0.1:5000/busybox:1"


@pytest.fixture
def dockerd(docker_host: str) -> Iterator[PrivateDockerd]:
    root = Path(tempfile.mkdtemp(prefix="cn-", dir="/tmp"))
    d = PrivateDockerd(root)
    try:
        d.start()
        yield d
    finally:
        d.stop()
        shutil.rmtree(root, ignore_errors=True)


async def _started(dockerd: PrivateDockerd, marker: Path) -> None:
    async with asyncio.timeout(60):
        while not marker.exists():
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("how", ["stop", "kill"])
async def test_engine_stopping_mid_run_is_an_engine_failure(
    dockerd: PrivateDockerd, tmp_path: Path, how: str
) -> None:
    ex = DockerExecutor(DockerConfig(host=f"unix://{dockerd.sock}", stop_grace=1.0), "n-faults")

    spec = make_spec(
        "touch /out/started; sleep 60", image=REGISTRY_BUSYBOX, outputs=[{"Name": "out", "path": "/out"}]
    )
    request = make_request(tmp_path / "results", spec, node_id="n-faults")
    run = asyncio.ensure_future(ex.run(request))
    try:
        await _started(dockerd, request.results_dir / "out" / "started")
        assert dockerd.proc is not None
        if how == "stop":
            await asyncio.to_thread(dockerd.stop)  # SIGTERM: the engine stops its containers, then exits
        else:
            dockerd.proc.kill()
        with pytest.raises(ExecutionFailed) as caught:
            async with asyncio.timeout(60):
                await run
        assert caught.value.retryable
        assert "docker engine" in caught.value.reason, caught.value.reason
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        await ex.aclose()


async def test_a_job_that_kills_itself_is_still_a_result(docker_host: str, tmp_path: Path) -> None:
    """Exit 137 by the job's own hand is its result: only a kill from outside is an engine failure."""
    ex = DockerExecutor(DockerConfig(host=docker_host, stop_grace=1.0), "n-faults-self")
    try:
        request = make_request(
            tmp_path / "results",
            make_spec("sleep 60 & kill -9 $!; wait $!", image=REGISTRY_BUSYBOX),
            node_id="n-faults-self",
        )
        result = await ex.run(request)
    finally:
        await ex.aclose()
    assert result.exit_code == 137 and not result.runner_error
