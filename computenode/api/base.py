"""What the HTTP API may see of the node: the NodeView Protocol and the values it returns.

The handlers in this package read and act on the node only through NodeView, so the node's
internals (scheduler, store, backends) can change without touching the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from computenode.check import CheckReport
    from computenode.compute import ShardResponse
    from computenode.events import EventBus
    from computenode.metrics import Metrics
    from computenode.model import ExecutionState, Job, JobState, ResourceUsageData
    from computenode.store import ClientJobQuery, Execution, JobRecord, JobSummary, Page, Position, Transition


@dataclass(frozen=True, slots=True)
class Capacity:
    """A snapshot of the node's resources and of the executions that use them."""

    total: ResourceUsageData
    available: ResourceUsageData  # total minus what runs
    reserved: ResourceUsageData  # accepted bids not running yet
    running: ResourceUsageData
    job_max: ResourceUsageData
    running_executions: int
    queued_executions: int


class ComputeActions(Protocol):
    """The compute endpoint's and owned jobs' state changes. Each returns once the change is stored.

    An unknown execution or job raises NotFound, a move its state forbids InvalidTransition,
    and a job the node will not run Rejected (the API answers 404, 409 and 409).
    """

    async def ask_for_bid(
        self, job: Job, shard_indexes: list[int], callback_url: str
    ) -> list[ShardResponse]: ...

    async def bid_accepted(self, execution_id: str) -> Execution: ...

    async def bid_rejected(self, execution_id: str, justification: str) -> Execution: ...

    async def result_accepted(self, execution_id: str) -> Execution: ...

    async def result_rejected(self, execution_id: str, justification: str) -> Execution: ...

    async def cancel(self, execution_id: str, justification: str) -> Execution: ...

    async def submit(
        self, job: Job, client_id: str = "", submission: str = ""
    ) -> tuple[Job, list[Execution]]:
        """Run `job` as its owner; `client_id` is the verified signer of a v0.3 submit, if any,
        and `submission` the digest of its signed bytes (the same bytes again: the same job)."""
        ...

    async def cancel_job(self, job_id: str) -> list[Execution]: ...


class NodeView(Protocol):
    """The node as the status endpoints, the dashboard and the v0.3 requester API see it.

    Properties and plain methods read in-memory state and never block; the coroutines read
    the store (NotFound for an unknown ID).
    """

    @property
    def node_id(self) -> str: ...

    @property
    def labels(self) -> Mapping[str, str]: ...

    @property
    def ready(self) -> bool:
        """True once the node has started: until then the API answers 503 except /healthz."""
        ...

    @property
    def api_token(self) -> str:
        """The bearer token mutating calls need; empty when none is configured."""
        ...

    @property
    def read_rate(self) -> float:
        """Paced reads (lists, the dashboard, /metrics) per second, all clients together."""
        ...

    @property
    def draining(self) -> bool: ...

    @property
    def engines(self) -> list[str]:
        """Enabled engines' wire names, sorted (storage_sources and publishers likewise)."""
        ...

    @property
    def storage_sources(self) -> list[str]: ...

    @property
    def publishers(self) -> list[str]: ...

    @property
    def metrics(self) -> Metrics: ...

    def network_status(self) -> dict[str, Any] | None:
        """The libp2p side (peer ID, listen addresses, peers, per-requester counts); None when the
        node is not part of a network."""
        ...

    @property
    def compute(self) -> ComputeActions: ...

    @property
    def events(self) -> EventBus:
        """Job, execution and progress events (the SSE stream and long polls read them)."""
        ...

    def capacity(self) -> Capacity: ...

    def dependency_reasons(self) -> Mapping[str, str | None]:
        """Each dependency check's latest answer: None when ok, else why not."""
        ...

    def usable_engines(self) -> list[str]:
        """The enabled engines whose dependency check passed (the node can run their jobs)."""
        ...

    def log_path(self, execution_id: str, stream: str) -> Path:
        """Where the execution's `stream` (stdout or stderr) is written; it may not exist yet."""
        ...

    def results_archive(self, execution_id: str) -> Path | None:
        """The Local publisher's tar.gz of the execution's results, or None without that publisher."""
        ...

    async def set_drain(self, mode: str) -> None:
        """graceful, fast or off; kept across restarts."""
        ...

    async def execution(self, execution_id: str) -> Execution: ...

    async def execution_history(self, execution_id: str) -> list[Transition]: ...

    async def executions(
        self, state: ExecutionState | None = None, job_id: str | None = None, limit: int = 1000
    ) -> list[Execution]:
        """Newest first."""
        ...

    async def execution_page(
        self,
        state: ExecutionState | None = None,
        job_id: str | None = None,
        limit: int = 100,
        after: Position | None = None,
    ) -> Page[Execution]:
        """Newest first, from below `after` (the previous page's `next`)."""
        ...

    async def active_executions(self, limit: int = -1) -> list[Execution]:
        """The executions not in a terminal state, oldest first (all of them unless `limit`)."""
        ...

    async def execution_counts(self) -> dict[ExecutionState, int]: ...

    async def pending_callbacks(self) -> int:
        """Callbacks stored and not yet acknowledged by their destination."""
        ...

    async def job_record(self, job_id: str) -> JobRecord: ...

    async def job_with_executions(self, job_id: str) -> tuple[JobRecord, list[Execution]]:
        """The job (NotFound if none) and its executions, newest first, read together."""
        ...

    async def job_page(
        self,
        state: JobState | None = None,
        label: str | None = None,
        since: float | None = None,
        limit: int = 100,
        after: Position | None = None,
    ) -> Page[JobSummary]:
        """Newest first, from below `after`; only jobs in `state`, annotated `label`, created at or after `since`."""
        ...

    async def client_jobs(self, client_id: str, query: ClientJobQuery) -> list[JobSummary]:
        """The jobs a v0.3 client submitted, as its /requester/list asks for them."""
        ...

    async def client_job(self, client_id: str, job_id: str, prefix_len: int) -> JobRecord | None:
        """A v0.3 client's job by its ID, or else by a `prefix_len`-character prefix of it."""
        ...

    async def job_ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        """Up to `limit` job IDs that start with `prefix`, in ID order."""
        ...

    @property
    def ipfs_api(self) -> str:
        """The kubo RPC API (a multiaddr) the node's IPFS storage and publisher use; empty without them."""
        ...

    async def check_job(self, job: Job) -> CheckReport:
        """What the node would answer to `job` now, with every reason; stores nothing."""
        ...
