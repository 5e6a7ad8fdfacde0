"""The Docker executor against the real engine (scripts/testbed.sh): no mock of Docker anywhere.

Each test runs under a node ID of its own; an autouse fixture fails the test when a
container labelled with it is left behind.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiodocker
import psutil
import pytest

from computenode.config import DockerConfig
from computenode.errors import ExecutionFailed, ImageUnavailable, JobTimeout, OutOfMemory, SpecError
from computenode.executors import docker_image
from computenode.executors.base import ExecutionRequest, Executor, InputVolume, Recoverable
from computenode.executors.docker import MIN_API, DockerExecutor, _older
from computenode.executors.docker_config import (
    EXECUTION,
    HTTP_UNSUPPORTED,
    container_config,
    container_name,
    labels,
    limits,
    node_filter,
)
from computenode.executors.docker_image import seconds_text
from computenode.model import ResourceUsageData, Spec, StorageSpec

IMAGE = "computenode-test/busybox:latest"
MiB = 1 << 20


# ---------------------------------------------------------------- helpers and fixtures


def make_spec(script: str = "true", *, image: str = IMAGE, **docker: Any) -> Spec:
    extra = {k: v for k, v in docker.items() if k not in ("outputs", "network")}
    return Spec.model_validate(
        {
            "Engine": "Docker",
            "Docker": {"Image": image, "Entrypoint": ["sh", "-c", script], **extra},
            "outputs": docker.get("outputs", []),
            "Network": {"Type": docker.get("network", "None")},
        }
    )


def make_request(
    results: Path,
    spec: Spec,
    *,
    node_id: str,
    inputs: tuple[InputVolume, ...] = (),
    resources: ResourceUsageData | None = None,
    timeout_s: float = 60.0,
    gpu_indexes: tuple[int, ...] = (),
) -> ExecutionRequest:
    results.mkdir(parents=True, exist_ok=True)
    return ExecutionRequest(
        execution_id=f"ex-{uuid.uuid4().hex[:12]}",
        job_id="job-1",
        shard_index=0,
        node_id=node_id,
        spec=spec,
        inputs=inputs,
        results_dir=results,
        resources=resources or ResourceUsageData(),
        timeout_s=timeout_s,
        gpu_indexes=gpu_indexes,
    )


def cli(*args: str) -> str:
    """The docker CLI, for test set-up only (tagging, pushing, committing)."""
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {done.stderr}")
    return done.stdout


@pytest.fixture
def node_id() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def docker_cfg(docker_host: str) -> DockerConfig:
    return DockerConfig(host=docker_host, stop_grace=1.0)


@pytest.fixture
async def executor(docker_cfg: DockerConfig, node_id: str) -> AsyncIterator[DockerExecutor]:
    ex = DockerExecutor(docker_cfg, node_id)
    yield ex
    await ex.aclose()


@pytest.fixture
async def engine(docker_host: str) -> AsyncIterator[aiodocker.Docker]:
    docker = aiodocker.Docker(url=docker_host)
    yield docker
    await docker.close()


@pytest.fixture(autouse=True)
async def no_leftover_containers(docker_host: str, node_id: str) -> AsyncIterator[None]:
    yield
    async with aiodocker.Docker(url=docker_host) as docker:
        left = await docker.containers.list(all=True, filters=node_filter(node_id))
        for row in left:  # clean up so one failure does not cascade, then fail
            await row.delete(force=True)
    assert not left, f"containers left behind: {[row['Names'] for row in left]}"


async def run_script(
    executor: DockerExecutor, tmp_path: Path, script: str, **kw: Any
) -> tuple[ExecutionRequest, Any]:
    spec_kw = {
        k: kw.pop(k) for k in ("outputs", "network", "EnvironmentVariables", "WorkingDirectory") if k in kw
    }
    request = make_request(tmp_path / "results", make_spec(script, **spec_kw), node_id=executor.node_id, **kw)
    return request, await executor.run(request)


def test_conforms_to_protocols() -> None:
    ex: Executor = DockerExecutor(DockerConfig(), "n")
    assert isinstance(ex, Executor)
    assert isinstance(ex, Recoverable)
    assert repr(ex) == "DockerExecutor(node='n', host='unix:///var/run/docker.sock', running=0)"


# ---------------------------------------------------------------- pure config builders


def test_config_labels_name_and_entrypoint(tmp_path: Path) -> None:
    spec = make_spec("echo hi", EnvironmentVariables=["A=1"], WorkingDirectory="/work")
    request = make_request(tmp_path, spec, node_id="n1")
    config = container_config(request, DockerConfig(user="1000:1000"), "n1", [])
    assert config["Entrypoint"] == ["sh", "-c", "echo hi"] and config["Cmd"] == []
    assert config["Env"] == ["A=1"] and config["WorkingDir"] == "/work" and config["User"] == "1000:1000"
    assert config["Labels"] == labels(request, "n1")
    assert config["Labels"]["io.computenode.execution"] == request.execution_id
    assert config["Labels"]["io.computenode.shard"] == "0"
    assert config["HostConfig"]["NetworkMode"] == "none"
    assert container_name("abc") == "computenode-abc"


def test_config_without_entrypoint_keeps_the_images() -> None:
    spec = Spec.model_validate({"Engine": "Docker", "Docker": {"Image": IMAGE}})
    request = make_request(Path("/tmp/unused"), spec, node_id="n")
    config = container_config(request, DockerConfig(), "n", [])
    assert "Entrypoint" not in config and "Cmd" not in config and "User" not in config


def test_limits_gpus_are_the_assigned_indexes() -> None:
    host = limits(ResourceUsageData(cpu=1.5, memory=64 * MiB, gpu=2), (1, 3), DockerConfig(pids_limit=50))
    assert host["DeviceRequests"] == [{"Driver": "", "DeviceIDs": ["1", "3"], "Capabilities": [["gpu"]]}]
    assert host["NanoCpus"] == 1_500_000_000
    assert host["Memory"] == host["MemorySwap"] == 64 * MiB
    assert host["PidsLimit"] == 50 and host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"] and host["Privileged"] is False


def test_limits_unset_resources_set_nothing() -> None:
    host = limits(ResourceUsageData(), (), DockerConfig())
    assert not {"Memory", "MemorySwap", "NanoCpus", "DeviceRequests"} & host.keys()


@pytest.mark.parametrize("seconds, text", [(2.0, "2"), (0.25, "0.25"), (3600.0, "3600"), (1.5, "1.5")])
def test_seconds_text(seconds: float, text: str) -> None:
    assert seconds_text(seconds) == text


def test_full_network_is_the_hosts(tmp_path: Path) -> None:
    request = make_request(tmp_path, make_spec(network="Full"), node_id="n")
    config = container_config(request, DockerConfig(), "n", [])
    assert config["HostConfig"]["NetworkMode"] == "host" and config["NetworkDisabled"] is False


# ---------------------------------------------------------------- runs on the engine


async def test_exit_code_is_a_result(executor: DockerExecutor, tmp_path: Path) -> None:
    request, result = await run_script(executor, tmp_path, "echo out; echo err >&2; exit 3")
    assert (result.exit_code, result.stdout, result.stderr, result.runner_error) == (3, "out\n", "err\n", "")
    assert (request.results_dir / "exitCode").read_text() == "3"
    assert (request.results_dir / "stdout").read_text() == "out\n"


@pytest.mark.parametrize("size, truncated", [(2048, False), (2049, True)])
async def test_inline_streams_truncate_at_2048(
    executor: DockerExecutor, tmp_path: Path, size: int, truncated: bool
) -> None:
    script = f"head -c {size} /dev/zero | tr '\\0' a; head -c {size} /dev/zero | tr '\\0' b >&2"
    request, result = await run_script(executor, tmp_path, script)
    assert result.stdout == "a" * 2048 and result.stdout_truncated is truncated
    assert result.stderr == "b" * 2048 and result.stderr_truncated is truncated
    assert (request.results_dir / "stdout").stat().st_size == size
    assert (request.results_dir / "stderr").stat().st_size == size


async def test_output_is_byte_exact(executor: DockerExecutor, tmp_path: Path) -> None:
    request, _ = await run_script(executor, tmp_path, "printf '\\377\\376bin\\000'; printf '\\001e' >&2")
    assert (request.results_dir / "stdout").read_bytes() == b"\xff\xfebin\x00"
    assert (request.results_dir / "stderr").read_bytes() == b"\x01e"


async def test_stream_cap_keeps_draining(docker_host: str, node_id: str, tmp_path: Path) -> None:
    ex = DockerExecutor(DockerConfig(host=docker_host, stream_cap=3000), node_id)
    try:
        request, result = await run_script(ex, tmp_path, "head -c 100000 /dev/zero; echo done >&2")
    finally:
        await ex.aclose()
    assert (request.results_dir / "stdout").stat().st_size == 3000
    assert result.stdout_truncated and result.stderr == "done\n" and result.exit_code == 0


async def test_50mb_of_output_keeps_memory_flat(executor: DockerExecutor, tmp_path: Path) -> None:
    proc = psutil.Process(os.getpid())
    baseline = proc.memory_info().rss
    peak = baseline
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, proc.memory_info().rss)
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    try:
        request, result = await run_script(executor, tmp_path, "head -c 52428800 /dev/zero; echo end >&2")
    finally:
        stop.set()
        await sampler
    assert result.exit_code == 0 and result.stdout_truncated and result.stderr == "end\n"
    assert (request.results_dir / "stdout").stat().st_size == 50 * MiB
    assert peak - baseline < 30 * MiB, f"RSS grew by {(peak - baseline) / MiB:.1f} MiB"


async def test_env_and_working_directory(executor: DockerExecutor, tmp_path: Path) -> None:
    _, result = await run_script(
        executor,
        tmp_path,
        'echo "$A|$B"; pwd',
        EnvironmentVariables=["A=1", "B=two words=x"],
        WorkingDirectory="/work/dir",
    )
    assert result.stdout == "1|two words=x\n/work/dir\n"


async def test_inputs_are_read_only(executor: DockerExecutor, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_text("A")
    single = tmp_path / "single.txt"
    single.write_text("S")
    inputs = (
        InputVolume(StorageSpec(path="/inputs"), folder, "/inputs"),
        InputVolume(StorageSpec(path="/data/one.txt"), single, "/data/one.txt"),
    )
    script = (
        "cat /inputs/a.txt /data/one.txt; echo; "
        "echo x > /inputs/new 2>/dev/null && echo wrote-dir; "
        "echo x > /data/one.txt 2>/dev/null && echo wrote-file; exit 0"
    )
    _, result = await run_script(executor, tmp_path, script, inputs=inputs)
    assert result.stdout == "AS\n"
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt"] and single.read_text() == "S"


async def test_outputs_land_in_the_results_dir(executor: DockerExecutor, tmp_path: Path) -> None:
    outputs = [{"Name": "out", "path": "/outputs"}, {"Name": "logs", "path": "/var/logs"}]
    request, result = await run_script(
        executor,
        tmp_path,
        "echo r > /outputs/r.txt; mkdir /var/logs/d; echo l > /var/logs/d/l",
        outputs=outputs,
    )
    assert result.exit_code == 0
    assert (request.results_dir / "out" / "r.txt").read_text() == "r\n"
    assert (request.results_dir / "logs" / "d" / "l").read_text() == "l\n"


async def test_outputs_writable_by_a_configured_user(docker_host: str, node_id: str, tmp_path: Path) -> None:
    ex = DockerExecutor(DockerConfig(host=docker_host, user="1000:1000"), node_id)
    try:
        request, result = await run_script(
            ex, tmp_path, "id -u; echo r > /outputs/r.txt", outputs=[{"Name": "out", "path": "/outputs"}]
        )
    finally:
        await ex.aclose()
    assert result.stdout == "1000\n" and (request.results_dir / "out" / "r.txt").read_text() == "r\n"


@pytest.mark.parametrize("name", ["", "..", "../x", "a/b", "stdout"])
async def test_bad_output_name_fails_before_anything_starts(
    executor: DockerExecutor, tmp_path: Path, name: str
) -> None:
    with pytest.raises(SpecError):
        await run_script(executor, tmp_path, "true", outputs=[{"Name": name, "path": "/o"}])


async def test_memory_limit_shows_in_the_cgroup(executor: DockerExecutor, tmp_path: Path) -> None:
    script = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"
    resources = Spec.model_validate(
        {"Engine": "Docker", "Docker": {"Image": IMAGE}, "Resources": {"Memory": "100mb"}}
    ).resources.to_usage()
    _, result = await run_script(executor, tmp_path, script, resources=resources)
    assert result.stdout.strip() == "104857600"


async def test_oom_is_reported_as_such(executor: DockerExecutor, tmp_path: Path) -> None:
    script = "echo before; x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo after"
    with pytest.raises(OutOfMemory) as caught:
        await run_script(executor, tmp_path, script, resources=ResourceUsageData(memory=32 * MiB))
    assert caught.value.reason == "memory limit exceeded" and not caught.value.retryable
    assert caught.value.result is not None
    assert (
        caught.value.result.stdout == "before\n"
        and caught.value.result.runner_error == "memory limit exceeded"
    )


async def test_cpu_and_pids_limits(docker_host: str, node_id: str, tmp_path: Path) -> None:
    ex = DockerExecutor(DockerConfig(host=docker_host, pids_limit=64), node_id)
    script = (
        "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us"
        " /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/cpu.max /sys/fs/cgroup/pids.max"
    )
    try:
        _, result = await run_script(ex, tmp_path, script, resources=ResourceUsageData(cpu=0.5))
    finally:
        await ex.aclose()
    # v1: quota, period, pids.max; v2: "50000 100000" (cpu.max), then pids.max
    assert result.stdout.split() == ["50000", "100000", "64"]


async def test_hardening_in_the_running_container(
    executor: DockerExecutor, engine: aiodocker.Docker, tmp_path: Path
) -> None:
    """cap-drop ALL shows as empty effective capabilities even for root."""
    _, result = await run_script(executor, tmp_path, "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status")
    caps = dict(line.split(":\t") for line in result.stdout.splitlines())
    assert caps == {"CapEff": "0000000000000000", "NoNewPrivs": "1"}


async def test_network_none_leaves_only_lo(executor: DockerExecutor, tmp_path: Path) -> None:
    _, result = await run_script(executor, tmp_path, "cat /proc/net/dev")
    assert interfaces(result.stdout) == {"lo"}


async def test_network_full_is_the_hosts(executor: DockerExecutor, tmp_path: Path) -> None:
    _, result = await run_script(executor, tmp_path, "cat /proc/net/dev", network="Full")
    assert interfaces(result.stdout) == interfaces(Path("/proc/net/dev").read_text())


async def test_http_network_is_refused_before_anything_starts(
    executor: DockerExecutor, tmp_path: Path
) -> None:
    with pytest.raises(ExecutionFailed) as caught:
        await run_script(executor, tmp_path, "true", network="HTTP")
    assert caught.value.reason == HTTP_UNSUPPORTED


def interfaces(proc_net_dev: str) -> set[str]:
    return {line.split(":")[0].strip() for line in proc_net_dev.splitlines() if ":" in line}


async def test_timeout_stops_the_container_and_keeps_output(
    executor: DockerExecutor, engine: aiodocker.Docker, tmp_path: Path
) -> None:
    # A shell as PID 1 ignores SIGTERM: this also checks the SIGKILL after the grace.
    with pytest.raises(JobTimeout) as caught:
        await run_script(executor, tmp_path, "echo started; echo e >&2; sleep 60", timeout_s=2)
    err = caught.value
    assert err.reason == "timed out after 2 s" and not err.retryable
    assert err.result is not None and err.result.stdout == "started\n" and err.result.stderr == "e\n"
    assert err.result.runner_error == "timed out after 2 s"
    assert (tmp_path / "results" / "stdout").read_text() == "started\n"


async def test_cancel_kills_at_once_and_keeps_output(executor: DockerExecutor, tmp_path: Path) -> None:
    request = make_request(
        tmp_path / "results", make_spec("echo started; sleep 60"), node_id=executor.node_id, timeout_s=100
    )
    task = asyncio.create_task(executor.run(request))
    stdout = request.results_dir / "stdout"
    while not (stdout.exists() and stdout.read_text() == "started\n"):  # the condition, polled
        assert not task.done()
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stdout.read_text() == "started\n"
    assert await executor.live_executions() == set()


async def test_live_executions_while_running(executor: DockerExecutor, tmp_path: Path) -> None:
    request = make_request(tmp_path / "r", make_spec("echo up; sleep 60"), node_id=executor.node_id)
    task = asyncio.create_task(executor.run(request))
    while not (request.results_dir / "stdout").exists() or not (request.results_dir / "stdout").read_text():
        await asyncio.sleep(0.05)
    assert await executor.live_executions() == {request.execution_id}
    assert await executor.reap(set()) == 0  # its own running execution is never reaped
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_engine_unreachable_is_a_reason(node_id: str, tmp_path: Path) -> None:
    ex = DockerExecutor(DockerConfig(host=f"unix://{tmp_path}/no.sock"), node_id)
    try:
        reason = await ex.check()
    finally:
        await ex.aclose()
    assert reason is not None and "no.sock" in reason


async def test_check_ok(executor: DockerExecutor) -> None:
    assert await executor.check() is None


def test_engines_older_than_api_1_30_are_refused() -> None:
    """They answer a wait's headers only at the exit: a wait made before the start would hang."""
    assert _older("1.29", MIN_API) and _older("1.9", MIN_API)
    assert not _older("1.30", MIN_API) and not _older("1.50", MIN_API) and not _older("2.0", MIN_API)
    assert not _older("", MIN_API)  # unreadable: not judged


# ---------------------------------------------------------------- images and pulls


async def test_missing_image_with_policy_never(docker_host: str, node_id: str, tmp_path: Path) -> None:
    ex = DockerExecutor(DockerConfig(host=docker_host, pull_policy="never"), node_id)
    request = make_request(tmp_path, make_spec(image="computenode-test/absent:1"), node_id=node_id)
    try:
        with pytest.raises(ImageUnavailable) as caught:
            await ex.run(request)
    finally:
        await ex.aclose()
    assert (
        caught.value.reason
        == "image computenode-test/absent:1 is not on this node and its pull policy is never"
    )


async def test_pull_failure_names_image_and_registry_answer(
    executor: DockerExecutor, registry: str, tmp_path: Path
) -> None:
    image = f"{registry}/busybox:absent-{uuid.uuid4().hex[:8]}"
    request = make_request(tmp_path, make_spec(image=image), node_id=executor.node_id)
    with pytest.raises(ImageUnavailable) as caught:
        await executor.run(request)
    assert caught.value.reason.startswith(f"cannot pull image {image}: ")
    assert "manifest unknown" in caught.value.reason  # the registry's own words
    assert not caught.value.retryable


@pytest.fixture(scope="session")
def marker_image(docker_host: str) -> Iterator[str]:
    """A local image like the busybox one plus /marker, to tell a pulled image from a local tag."""
    name = f"cn-test-marker-{uuid.uuid4().hex[:8]}"
    image = f"computenode-test/marker:{name}"
    cli("run", "--name", name, "--network", "none", IMAGE, "sh", "-c", "echo registry > /marker")
    try:
        cli("commit", name, image)
    finally:
        cli("rm", "-f", name)
    yield image
    subprocess.run(["docker", "rmi", image], capture_output=True, check=False)


@pytest.fixture
def pushed(marker_image: str, registry: str) -> Iterator[tuple[str, str]]:
    """The marker image pushed under a fresh tag, then untagged here: (image:tag, image@digest)."""
    ref = f"{registry}/busybox:t-{uuid.uuid4().hex[:10]}"
    cli("tag", marker_image, ref)
    out = cli("push", ref)
    digest = re.search(r"digest: (sha256:[0-9a-f]{64})", out)
    assert digest, out
    cli("rmi", ref)
    by_digest = f"{registry}/busybox@{digest.group(1)}"
    yield ref, by_digest
    for name in (ref, by_digest):
        subprocess.run(["docker", "rmi", name], capture_output=True, check=False)


def has_local(ref: str) -> bool:
    return (
        subprocess.run(["docker", "image", "inspect", ref], capture_output=True, check=False).returncode == 0
    )


async def test_pull_by_tag_when_not_present(
    executor: DockerExecutor, pushed: tuple[str, str], tmp_path: Path
) -> None:
    ref, _ = pushed
    assert not has_local(ref)
    request = make_request(tmp_path, make_spec("cat /marker", image=ref), node_id=executor.node_id)
    result = await executor.run(request)
    assert result.stdout == "registry\n" and has_local(ref)


async def test_pull_by_digest(executor: DockerExecutor, pushed: tuple[str, str], tmp_path: Path) -> None:
    _, by_digest = pushed
    assert not has_local(by_digest)
    request = make_request(tmp_path, make_spec("cat /marker", image=by_digest), node_id=executor.node_id)
    result = await executor.run(request)
    assert result.stdout == "registry\n" and has_local(by_digest)


async def test_an_image_seen_lately_is_not_inspected_again(
    executor: DockerExecutor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inspected: list[str] = []
    real = docker_image.has_image

    async def counting(docker: aiodocker.Docker, image: str) -> bool:
        inspected.append(image)
        return await real(docker, image)

    monkeypatch.setattr(docker_image, "has_image", counting)
    for i in range(3):
        request = make_request(tmp_path / str(i), make_spec("true"), node_id=executor.node_id)
        assert (await executor.run(request)).exit_code == 0
    assert inspected == [IMAGE]


async def test_an_image_removed_after_it_was_seen_is_pulled_again(
    executor: DockerExecutor, pushed: tuple[str, str], tmp_path: Path
) -> None:
    ref, _ = pushed
    for attempt in ("pulled", "seen, then removed"):
        request = make_request(
            tmp_path / attempt, make_spec("cat /marker", image=ref), node_id=executor.node_id
        )
        assert (await executor.run(request)).stdout == "registry\n", attempt
        cli("rmi", ref)  # the cache still says present: create answers 404, the executor pulls


async def test_pull_always_refreshes_a_local_tag(
    docker_host: str, node_id: str, pushed: tuple[str, str], tmp_path: Path
) -> None:
    ref, _ = pushed
    cli("tag", IMAGE, ref)  # the local tag points at an image without /marker
    cmd = "cat /marker 2>/dev/null || echo local"
    for policy, expected in (("if-not-present", "local\n"), ("always", "registry\n")):
        ex = DockerExecutor(DockerConfig(host=docker_host, pull_policy=policy), node_id)
        try:
            request = make_request(tmp_path / policy, make_spec(cmd, image=ref), node_id=node_id)
            assert (await ex.run(request)).stdout == expected, policy
        finally:
            await ex.aclose()


# ---------------------------------------------------------------- reaper


async def create_owned(engine: aiodocker.Docker, node_id: str, execution_id: str) -> str:
    request = make_request(Path("/tmp/unused"), make_spec("sleep 60"), node_id=node_id)
    config = {
        "Image": IMAGE,
        "Cmd": ["sleep", "60"],
        "Labels": {**labels(request, node_id), EXECUTION: execution_id},
        "HostConfig": {"NetworkMode": "none"},
    }
    container = await engine.containers.create(config, name=container_name(execution_id))
    return container.id


async def test_reaper_removes_orphans_and_leaves_live_ones(
    docker_host: str, node_id: str, engine: aiodocker.Docker
) -> None:
    orphan = f"orphan-{uuid.uuid4().hex[:8]}"
    live = f"live-{uuid.uuid4().hex[:8]}"
    await create_owned(engine, node_id, orphan)
    await create_owned(engine, node_id, live)
    young = DockerExecutor(DockerConfig(host=docker_host, reap_grace=3600), node_id)
    ex = DockerExecutor(DockerConfig(host=docker_host, reap_grace=0), node_id)
    try:
        assert await ex.live_executions() == {orphan, live}
        assert await young.reap({live}) == 0  # just created: inside the grace
        assert await ex.reap({live}) == 1
        assert await ex.live_executions() == {live}
        assert await ex.reap({live}) == 0  # idempotent
    finally:
        await young.aclose()
        await ex.aclose()
        for row in await engine.containers.list(all=True, filters=node_filter(node_id)):
            await row.delete(force=True)


async def test_reaper_ignores_other_nodes(docker_host: str, node_id: str, engine: aiodocker.Docker) -> None:
    other = f"{node_id}-other"
    await create_owned(engine, other, f"x-{uuid.uuid4().hex[:8]}")
    ex = DockerExecutor(DockerConfig(host=docker_host, reap_grace=0), node_id)
    try:
        assert await ex.reap(set()) == 0
    finally:
        await ex.aclose()
        for row in await engine.containers.list(all=True, filters=node_filter(other)):
            await row.delete(force=True)


async def test_entrypoint_that_cannot_start_is_a_clear_failure(
    executor: DockerExecutor, tmp_path: Path
) -> None:
    spec = Spec.model_validate(
        {"Engine": "Docker", "Docker": {"Image": IMAGE, "Entrypoint": ["/nonexistent"]}}
    )
    request = make_request(tmp_path, spec, node_id=executor.node_id)
    with pytest.raises(ExecutionFailed) as caught:
        await executor.run(request)
    assert (
        caught.value.reason.startswith("container could not start: ")
        and "/nonexistent" in caught.value.reason
    )
    assert not caught.value.retryable
