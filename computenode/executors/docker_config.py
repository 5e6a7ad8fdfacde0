"""Pure builders of the Engine-API container config for one execution (no I/O, tested without Docker).

Split out of executors/docker.py so each stage of the config (labels, mounts, limits, network)
is a small function a test can check on its own (rather than one long builder).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from computenode.config import DockerConfig
from computenode.errors import ExecutionFailed
from computenode.executors.base import ExecutionRequest
from computenode.model import Network, ResourceUsageData
from computenode.volume import InputVolume

LABEL = "io.computenode"
MANAGED = f"{LABEL}.managed"
NODE = f"{LABEL}.node"
JOB = f"{LABEL}.job"
SHARD = f"{LABEL}.shard"
EXECUTION = f"{LABEL}.execution"

HTTP_UNSUPPORTED = "HTTP network filtering is not supported by this node"


def container_name(execution_id: str) -> str:
    return f"computenode-{execution_id}"


def labels(request: ExecutionRequest, node_id: str) -> dict[str, str]:
    """Ownership labels: the reaper and the node's recovery find containers by these."""
    return {
        MANAGED: "1",
        NODE: node_id,
        JOB: request.job_id,
        SHARD: str(request.shard_index),
        EXECUTION: request.execution_id,
    }


def node_filter(node_id: str) -> dict[str, list[str]]:
    """containers.list filter for every container this node owns."""
    return {"label": [f"{MANAGED}=1", f"{NODE}={node_id}"]}


def mounts(inputs: tuple[InputVolume, ...], outputs: list[tuple[Path, str]]) -> list[dict[str, Any]]:
    """Inputs and contexts read-only at their path; each output's results folder read-write."""
    binds = [_bind(vol.host_path, vol.target, read_only=True) for vol in inputs]
    binds += [_bind(host, target, read_only=False) for host, target in outputs]
    return binds


def _bind(source: Path, target: str, *, read_only: bool) -> dict[str, Any]:
    return {"Type": "bind", "Source": str(source), "Target": target, "ReadOnly": read_only}


def limits(resources: ResourceUsageData, gpu_indexes: tuple[int, ...], cfg: DockerConfig) -> dict[str, Any]:
    """HostConfig resource limits and hardening.

    Memory and MemorySwap are equal so the job gets no swap on top of its limit;
    GPUs are the node-assigned device indexes, never "device 0" or "all".
    """
    host: dict[str, Any] = {
        "PidsLimit": cfg.pids_limit,
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges"],
        "Privileged": False,
    }
    if resources.memory > 0:
        host["Memory"] = resources.memory
        host["MemorySwap"] = resources.memory
    if resources.cpu > 0:
        host["NanoCpus"] = int(resources.cpu * 1e9)
    if gpu_indexes:
        host["DeviceRequests"] = [
            {"Driver": "", "DeviceIDs": [str(i) for i in gpu_indexes], "Capabilities": [["gpu"]]}
        ]
    return host


def network_mode(network: Network) -> str:
    """None: no network at all (only lo); Full: the host's network. Never a bridge (docs/docker-executor.md).

    HTTP (domain allow-list) would need a forwarder sidecar and a proxy; the bidder declines
    such jobs, so reaching here with one is refused before anything starts.
    """
    if network is Network.NONE:
        return "none"
    if network is Network.FULL:
        return "host"
    raise ExecutionFailed(HTTP_UNSUPPORTED)


def container_config(
    request: ExecutionRequest, cfg: DockerConfig, node_id: str, outputs: list[tuple[Path, str]]
) -> dict[str, Any]:
    """The whole create body: the spec's Docker section, labels, mounts, limits and network."""
    docker = request.spec.docker
    mode = network_mode(request.spec.network.type)
    config: dict[str, Any] = {
        "Image": docker.image,
        "Env": list(docker.environment_variables),
        "Labels": labels(request, node_id),
        "Tty": False,  # a TTY would merge stdout and stderr
        "OpenStdin": False,
        "AttachStdout": True,
        "AttachStderr": True,
        "NetworkDisabled": mode == "none",
        "HostConfig": {
            **limits(request.resources, request.gpu_indexes, cfg),
            "Mounts": mounts(request.inputs, outputs),
            "NetworkMode": mode,
            # Output is captured byte-exact through attach; a log driver would only
            # keep a second, UTF-8-mangled copy of it on disk (docs/docker-executor.md).
            "LogConfig": {"Type": "none", "Config": {}},
            "AutoRemove": False,  # State (OOMKilled, ExitCode) is read after exit
        },
    }
    if docker.entrypoint:
        # v0.3.23 has no separate Cmd: Entrypoint replaces the image's and the command is empty.
        config["Entrypoint"] = list(docker.entrypoint)
        config["Cmd"] = []
    if docker.working_directory:
        config["WorkingDir"] = docker.working_directory
    if cfg.user:
        config["User"] = cfg.user
    return config
