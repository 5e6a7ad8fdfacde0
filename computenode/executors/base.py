"""The executor seam: run one prepared shard and fill its results dir."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from computenode.model import ResourceUsageData, RunCommandResult, Spec
from computenode.volume import InputVolume


@dataclass(frozen=True, slots=True)
class ExecutionRequest:
    """Everything an executor needs for one execution of one shard."""

    execution_id: str
    job_id: str
    shard_index: int
    node_id: str
    spec: Spec
    inputs: tuple[InputVolume, ...]  # inputs and contexts of this shard
    results_dir: Path  # the executor makes it (output_dirs does); outputs go to results_dir/<Name>
    resources: ResourceUsageData  # what the node reserved (job_default filled in)
    timeout_s: float  # the job's effective timeout
    gpu_indexes: tuple[int, ...] = ()
    disk_allowance: int = 0  # bytes the outputs may take (Resources.Disk, else job_max); 0: unwatched
    entry_module: InputVolume | None = None  # WASM only
    import_modules: tuple[InputVolume, ...] = field(default_factory=tuple)  # WASM only


@runtime_checkable
class Executor(Protocol):
    async def check(self) -> str | None:
        """None when this engine can run jobs now, else the reason (shown in /readyz and bids)."""
        ...

    async def run(self, request: ExecutionRequest) -> RunCommandResult:
        """Run the shard to completion and fill `request.results_dir`.

        Writes `stdout`, `stderr` (whole, capped) and `exitCode` into the results dir
        and returns the RunCommandResult with the inline (2048-byte) streams.
        A non-zero exit code is a result. Raises ExecutionFailed (errors.py) when
        the job could not produce a result: JobTimeout, OutOfMemory,
        ImageUnavailable, InvalidModule..., with the partial result attached.
        On cancellation (the task is cancelled) the workload is stopped at once,
        partial output is kept, and CancelledError propagates.
        """
        ...

    async def aclose(self) -> None:
        """Release the engine's clients and threads; the node calls it once, at stop."""
        ...


@runtime_checkable
class Recoverable(Protocol):
    """Optional: an executor whose workloads outlive the daemon (Docker)."""

    async def live_executions(self) -> set[str]:
        """Execution IDs of workloads of this node still present on the engine."""
        ...

    async def reap(self, live: set[str], grace_s: float | None = None) -> int:
        """Remove workloads of this node that no execution in `live` owns and older than `grace_s`
        (None: the engine's configured grace; 0 at start-up, when nothing of the previous run is
        live); the count removed."""
        ...
