"""Host fingerprint: what this machine (or the cgroup we run in) offers, and the node's limits from it.

psutil reports the host's totals only, so CPUs are also bounded by the affinity mask and the
cgroup CPU quota, and memory by the cgroup memory limit (v1 and v2) when lower.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

from computenode.config import CapacityConfig
from computenode.errors import SpecError
from computenode.model import ResourceUsageData

log = logging.getLogger(__name__)

PROC_SELF = Path("/proc/self")
NVIDIA_SMI_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class NodeLimits:
    """The node's capacity: all it runs at once, one job's maximum and defaults, and its queue."""

    total: ResourceUsageData
    job_max: ResourceUsageData
    job_default: ResourceUsageData
    queue: ResourceUsageData


def node_limits(cfg: CapacityConfig, data_dir: Path) -> NodeLimits:
    """Limits from config; empty fields of total take host * host_fraction, of job_max and queue the total.

    Raises SpecError naming each field when job_max exceeds total or job_default exceeds job_max
    (Bacalhau panics at start-up for the same mistakes).
    """
    host = host_resources(data_dir)
    # A GPU is not divisible: 80% of one GPU must still be one GPU.
    share = host.multi(cfg.host_fraction)
    share = ResourceUsageData(share.cpu, share.memory, share.disk, host.gpu)
    total = cfg.total.to_usage().intersect(share)
    job_max = cfg.job_max.to_usage().intersect(total)
    queue = cfg.queue.to_usage().intersect(total)
    job_default = cfg.job_default.to_usage()
    errors = [("capacity.job_max", r) for r in job_max.exceeding(total)]
    errors += [("capacity.job_default", r) for r in job_default.exceeding(job_max)]
    if errors:
        raise SpecError(errors)
    return NodeLimits(total=total, job_max=job_max, job_default=job_default, queue=queue)


def host_resources(data_dir: Path) -> ResourceUsageData:
    """CPUs, memory, free disk under data_dir and GPUs this process may use. Blocks briefly (nvidia-smi)."""
    return ResourceUsageData(cpu=_cpus(), memory=_memory(), disk=free_disk(data_dir), gpu=len(gpu_indexes()))


def free_disk(data_dir: Path) -> int:
    """Free bytes on the filesystem of data_dir (or of its nearest existing parent)."""
    path = data_dir.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return psutil.disk_usage(str(path)).free


def gpu_indexes() -> list[int]:
    """NVIDIA GPU indexes from nvidia-smi; [] when it is absent or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
            check=True,
        )
        return parse_gpu_indexes(out.stdout)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi failed, assuming no GPU", extra={"error": str(exc)})
        return []


def parse_gpu_indexes(text: str) -> list[int]:
    return [int(line.strip()) for line in text.splitlines() if line.strip().isdigit()]


def _cpus() -> float:
    try:
        cpus = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cpus = float(psutil.cpu_count() or 1)
    quota = cgroup_cpu_limit()
    return min(cpus, quota) if quota else cpus


def _memory() -> int:
    total = psutil.virtual_memory().total
    limit = cgroup_memory_limit()
    return min(total, limit) if limit else total


def cgroup_cpu_limit(proc: Path = PROC_SELF) -> float | None:
    """CPUs allowed by the CFS quota (v2 cpu.max, v1 cpu.cfs_quota_us/period), lowest up the tree."""
    limits: list[float] = []
    for d in cgroup_dirs("cpu", proc):
        quota_period = _read(d / "cpu.max")
        if quota_period is not None:
            quota_text, _, period_text = quota_period.partition(" ")  # "max 100000" = no quota
            quota, period = _int(quota_text), _int(period_text)
        else:
            quota, period = _int(_read(d / "cpu.cfs_quota_us")), _int(_read(d / "cpu.cfs_period_us"))
        if quota and period and quota > 0 and period > 0:  # v1 writes -1 for no quota
            limits.append(quota / period)
    return min(limits) if limits else None


def cgroup_memory_limit(proc: Path = PROC_SELF) -> int | None:
    """Bytes allowed by memory.max (v2) or memory.limit_in_bytes (v1), lowest up the tree."""
    limits: list[int] = []
    for d in cgroup_dirs("memory", proc):
        for name in ("memory.max", "memory.limit_in_bytes"):
            value = _int(_read(d / name))  # v2 "max" = none; v1 ~2**63 = none, min() drops it
            if value and value > 0:
                limits.append(value)
    return min(limits) if limits else None


def cgroup_dirs(controller: str, proc: Path = PROC_SELF) -> list[Path]:
    """This process's cgroup directories for `controller`, its own first, then each ancestor.

    Reads /proc/self/cgroup for the path and /proc/self/mountinfo for where the hierarchy is
    mounted (v1 per controller, v2 unified). Inside a container the mount's root is the
    container's own cgroup, so the path is taken relative to it.
    """
    paths = _cgroup_paths(_read(proc / "cgroup") or "")
    out: list[Path] = []
    for root, mount_point, version_controllers in _cgroup_mounts(_read(proc / "mountinfo") or ""):
        if version_controllers is None:
            path = paths.get("")  # cgroup2: the "0::/path" line
        elif controller in version_controllers:
            path = paths.get(controller)
        else:
            continue
        if path is None:
            continue
        rel = path[len(root) :] if root != "/" and path.startswith(root) else path
        d = mount_point / rel.lstrip("/")
        while True:
            if d.is_dir():
                out.append(d)
            if d == mount_point or d == d.parent:
                break
            d = d.parent
    return out


def _cgroup_paths(text: str) -> dict[str, str]:
    """Controller -> path from /proc/self/cgroup ("4:memory:/x", "0::/y"); "" is the v2 path."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if parts[0] == "0" and controllers == "":
            paths[""] = path
            continue
        for c in controllers.split(","):
            paths.setdefault(c, path)
    return paths


def _cgroup_mounts(text: str) -> list[tuple[str, Path, set[str] | None]]:
    """(root, mount point, v1 controllers or None for cgroup2) from /proc/self/mountinfo."""
    mounts: list[tuple[str, Path, set[str] | None]] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        fstype, super_opts = tail[0], tail[2]
        if fstype == "cgroup2":
            mounts.append((fields[3], Path(fields[4]), None))
        elif fstype == "cgroup":
            mounts.append((fields[3], Path(fields[4]), set(super_opts.split(","))))
    return mounts


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None
