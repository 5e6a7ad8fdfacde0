"""The Execution record: one attempt at one shard of one job on this node."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from computenode.model import ExecutionState, JobState, ResourceUsageData, RunCommandResult, StorageSpec

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Execution:
    id: str
    job_id: str
    shard_index: int
    state: ExecutionState = ExecutionState.CREATED
    version: int = 1
    usage: ResourceUsageData = field(default_factory=ResourceUsageData)
    callback_url: str = ""  # the requester's; empty for jobs this node owns
    owned: bool = False  # the node is the job's owner (POST /api/v1/jobs)
    attempt: int = 0  # retries of an owned shard count up
    comment: str = ""  # the last transition's reason
    run_output: RunCommandResult | None = None
    proposal: bytes = b""
    published: StorageSpec | None = None
    retryable: bool = False  # set with Failed: may an owned job run this shard again
    created_at: float = 0.0
    updated_at: float = 0.0
    bid_expires_at: float = 0.0

    def __repr__(self) -> str:
        return (
            f"<Execution {self.id} job={self.job_id}#{self.shard_index} {self.state.value} v{self.version}>"
        )


@dataclass(frozen=True, slots=True)
class Transition:
    previous: ExecutionState | None
    new: ExecutionState
    comment: str
    time: float

    def to_wire(self) -> dict[str, object]:
        from datetime import UTC, datetime

        return {
            "PreviousState": self.previous.value if self.previous else "",
            "NewState": self.new.value,
            "Comment": self.comment,
            "Time": datetime.fromtimestamp(self.time, UTC).isoformat().replace("+00:00", "Z"),
        }


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job this node knows: owned ones are run entirely here."""

    id: str
    job_json: str  # the normalised Job, seeds' names
    owned: bool
    client_id: str = ""  # set only for verified requester-API submissions
    requester: str = ""  # who offered it: the CallbackURL over HTTP; empty for owned jobs
    spec_hash: str = ""  # sha256 of the Spec: the same ID with another spec is another job
    submission: str = ""  # sha256 of a signed v0.3 submission: the same bytes again are this job
    cancelled: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0
    state: JobState = JobState.NEW  # kept by the store with each of its executions' changes


@dataclass(frozen=True, slots=True)
class JobSummary:
    """A job as a list shows it: its record, its Spec.Annotations and how many shards it has."""

    record: JobRecord
    annotations: tuple[str, ...]
    shards: int  # distinct shard indexes among its executions


# Where a newest-first page ends: (created_at, id) of its last row; the next page starts below it.
Position = tuple[float, str]


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next: Position | None  # None: this is the last page


@dataclass(frozen=True, slots=True)
class Destination:
    """Where callbacks go: a transport (a key of callbacks.CallbackSender.transports) and an
    address in its terms; the requester's CallbackURL for "http"."""

    transport: str
    address: str

    def __str__(self) -> str:
        return f"{self.transport}:{self.address}"


@dataclass(frozen=True, slots=True)
class Callback:
    """One queued callback: `name` (on_run_complete, ...) with its JSON body, for `destination`."""

    id: int  # the order: a destination's callbacks are delivered by ascending id
    destination: Destination
    name: str
    body: str
    attempts: int  # deliveries refused so far
    next_at: float  # no delivery before (epoch seconds)


@dataclass(frozen=True, slots=True)
class Tombstone:
    """What is kept of a job deleted after retention.history_for (cleanup.py): enough that its ID
    never names another job and its signed submission, sent again, names this one."""

    id: str
    owned: bool
    client_id: str
    requester: str
    spec_hash: str
    submission: str
    created_at: float
    deleted_at: float


@dataclass(frozen=True, slots=True)
class ClientJobQuery:
    """v0.3.23's /requester/list filters: an ID (full, or `prefix_len` characters of it), tags
    (Spec.Annotations) to include and exclude, the sort and how many."""

    id: str = ""
    prefix_len: int = 8
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    sort_by: str = "created_at"  # id | created_at; anything else: newest first
    reverse: bool = False
    limit: int = 1000
