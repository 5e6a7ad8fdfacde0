"""Host fingerprint and node limits: sanity on this host, cgroup files of both versions, nvidia-smi."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from computenode.capacity import NodeLimits, gpu_indexes, host_resources, node_limits
from computenode.capacity.fingerprint import cgroup_cpu_limit, cgroup_memory_limit, parse_gpu_indexes
from computenode.config import CapacityConfig
from computenode.errors import SpecError
from computenode.model import ResourceUsageData

MI, GI = 2**20, 2**30


def test_host_resources_are_sane(tmp_path: Path) -> None:
    host = host_resources(tmp_path)
    assert 0 < host.cpu <= len(os.sched_getaffinity(0))
    assert 0 < host.memory <= psutil.virtual_memory().total
    assert host.disk > 0
    assert host.gpu == len(gpu_indexes()) >= 0


def test_disk_of_a_data_dir_not_created_yet(tmp_path: Path) -> None:
    assert host_resources(tmp_path / "not" / "yet").disk > 0


def test_default_limits_are_a_fraction_of_the_host(tmp_path: Path) -> None:
    host = host_resources(tmp_path)
    lim = node_limits(CapacityConfig(), tmp_path)
    assert isinstance(lim, NodeLimits)
    assert lim.total.cpu == pytest.approx(host.cpu * 0.8)
    assert lim.total.memory == pytest.approx(host.memory * 0.8, rel=1e-6)
    assert lim.total.disk == pytest.approx(host.disk * 0.8, rel=0.05)  # free space moves a little
    assert lim.total.gpu == host.gpu  # a GPU is never split
    assert lim.job_max == lim.total and lim.queue == lim.total
    assert lim.job_default == ResourceUsageData(0.1, 100 * MI, 0, 0)


def test_configured_fields_win_and_the_rest_follow(tmp_path: Path) -> None:
    cfg = CapacityConfig(
        total={"cpu": "1500m", "memory": "1Gi"},
        job_max={"cpu": "1"},
        queue={"cpu": "3"},
        job_default={"cpu": "250m", "memory": "64Mi"},
        host_fraction=0.5,
    )
    host = host_resources(tmp_path)
    lim = node_limits(cfg, tmp_path)
    assert (lim.total.cpu, lim.total.memory) == (1.5, GI)
    assert lim.total.disk == pytest.approx(host.disk * 0.5, rel=0.05)
    assert (lim.job_max.cpu, lim.job_max.memory, lim.job_max.disk) == (1.0, GI, lim.total.disk)
    assert (lim.queue.cpu, lim.queue.memory) == (3.0, GI)
    assert lim.job_default == ResourceUsageData(0.25, 64 * MI, 0, 0)


def test_inconsistent_limits_name_each_field(tmp_path: Path) -> None:
    cfg = CapacityConfig(total={"cpu": "1"}, job_max={"cpu": "2"}, job_default={"cpu": "3", "memory": "1Mi"})
    with pytest.raises(SpecError) as err:
        node_limits(cfg, tmp_path)
    fields = dict(err.value.errors)
    assert fields["capacity.job_max"] == "cpu: requested 2, allowed 1"
    assert fields["capacity.job_default"] == "cpu: requested 3, allowed 2"


def fake_proc(tmp_path: Path, cgroup: str, mounts: list[tuple[str, str, str, str]]) -> Path:
    """A /proc/self with `cgroup` and a mountinfo of (root, mount point, fstype, super options)."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "cgroup").write_text(cgroup)
    lines = [
        f"{30 + i} 25 0:{40 + i} {root} {point} rw,nosuid - {fstype} cgroup {opts}"
        for i, (root, point, fstype, opts) in enumerate(mounts)
    ]
    (proc / "mountinfo").write_text("\n".join(lines) + "\n")
    return proc


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def test_cgroup_v1_limits_lowest_up_the_tree(tmp_path: Path) -> None:
    cg = tmp_path / "cg"
    write(cg / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1")
    write(cg / "cpu,cpuacct" / "cpu.cfs_period_us", "100000")
    write(cg / "cpu,cpuacct" / "slice" / "cpu.cfs_quota_us", "250000")
    write(cg / "cpu,cpuacct" / "slice" / "cpu.cfs_period_us", "100000")
    write(cg / "memory" / "memory.limit_in_bytes", "9223372036854771712")
    write(cg / "memory" / "slice" / "memory.limit_in_bytes", str(2 * GI))
    write(cg / "memory" / "slice" / "me" / "memory.limit_in_bytes", str(3 * GI))
    proc = fake_proc(
        tmp_path,
        "5:memory:/slice/me\n3:cpu,cpuacct:/slice/me\n0::/\n",
        [
            ("/", str(cg / "cpu,cpuacct"), "cgroup", "rw,cpu,cpuacct"),
            ("/", str(cg / "memory"), "cgroup", "rw,memory"),
        ],
    )
    assert cgroup_cpu_limit(proc) == 2.5
    assert cgroup_memory_limit(proc) == 2 * GI


def test_cgroup_v2_limits_and_container_root(tmp_path: Path) -> None:
    cg = tmp_path / "unified"
    write(cg / "cpu.max", "max 100000")
    write(cg / "memory.max", "max")
    write(cg / "job" / "cpu.max", "150000 100000")
    write(cg / "job" / "memory.max", str(512 * MI))
    # Inside a container the mount's root is the container's own cgroup (/docker/abc).
    proc = fake_proc(tmp_path, "0::/docker/abc/job\n", [("/docker/abc", str(cg), "cgroup2", "rw")])
    assert cgroup_cpu_limit(proc) == 1.5
    assert cgroup_memory_limit(proc) == 512 * MI


def test_no_cgroup_limits(tmp_path: Path) -> None:
    cg = tmp_path / "unified"
    write(cg / "cpu.max", "max 100000")
    write(cg / "memory.max", "max")
    proc = fake_proc(tmp_path, "0::/\n", [("/", str(cg), "cgroup2", "rw")])
    assert cgroup_cpu_limit(proc) is None and cgroup_memory_limit(proc) is None
    assert cgroup_cpu_limit(tmp_path / "nowhere") is None


def test_parse_gpu_indexes() -> None:
    assert parse_gpu_indexes("0\n1\n 3 \n") == [0, 1, 3]
    assert parse_gpu_indexes("No devices were found\n") == []


def fake_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "nvidia-smi"
    exe.write_text("#!/bin/sh\n" + body)
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_gpus_from_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvidia_smi(tmp_path, monkeypatch, 'test "$1" = --query-gpu=index || exit 2\nprintf "0\\n1\\n"\n')
    assert gpu_indexes() == [0, 1]
    lim = node_limits(CapacityConfig(), tmp_path)
    assert lim.total.gpu == 2 and lim.job_max.gpu == 2


def test_failing_nvidia_smi_means_no_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nvidia_smi(tmp_path, monkeypatch, "echo 'driver not loaded' >&2\nexit 9\n")
    assert gpu_indexes() == []
