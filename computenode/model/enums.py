"""The enums of Bacalhau's v1beta1 model, parsed case-insensitively, emitted as the seeds spell them."""

from __future__ import annotations

from computenode.model.base import WireEnum


class Engine(WireEnum):
    NOOP = "Noop"
    DOCKER = "Docker"
    WASM = "Wasm"
    LANGUAGE = "Language"
    PYTHON_WASM = "PythonWasm"


class Verifier(WireEnum):
    NOOP = "Noop"
    DETERMINISTIC = "Deterministic"


class Publisher(WireEnum):
    NOOP = "Noop"
    IPFS = "Ipfs"
    FILECOIN = "Filecoin"
    ESTUARY = "Estuary"
    LOCAL = "Local"


class StorageSource(WireEnum):
    IPFS = "IPFS"
    URL_DOWNLOAD = "URLDownload"
    FILECOIN_UNSEALED = "FilecoinUnsealed"
    FILECOIN = "Filecoin"
    ESTUARY = "Estuary"
    INLINE = "Inline"
    LOCAL_DIRECTORY = "LocalDirectory"


class Network(WireEnum):
    NONE = "None"
    FULL = "Full"
    HTTP = "HTTP"


class Locality(WireEnum):
    LOCAL = "local"
    ANYWHERE = "anywhere"


class JobStateType(WireEnum):
    """A job's state on one node (seeds: JobStateType)."""

    BIDDING = "Bidding"
    WAITING = "Waiting"
    RUNNING = "Running"
    VERIFYING = "Verifying"
    CANCELLED = "Cancelled"
    ERROR = "Error"
    COMPLETED = "Completed"


class JobEventType(WireEnum):
    INITIAL_SUBMISSION = "InitialSubmission"
    CREATED = "Created"
    DEAL_UPDATED = "DealUpdated"
    BID = "Bid"
    BID_ACCEPTED = "BidAccepted"
    BID_REJECTED = "BidRejected"
    BID_CANCELLED = "BidCancelled"
    RUNNING = "Running"
    COMPUTE_ERROR = "ComputeError"
    RESULTS_PROPOSED = "ResultsProposed"
    RESULTS_ACCEPTED = "ResultsAccepted"
    RESULTS_REJECTED = "ResultsRejected"
    RESULTS_PUBLISHED = "ResultsPublished"
    ERROR = "Error"
    INVALID_REQUEST = "InvalidRequest"


class ExecutionState(WireEnum):
    """The compute node's execution lifecycle (Bacalhau v0.3.23 pkg/compute/store).

        Created ──> BidAccepted ──> Running ──> WaitingVerification ──> ResultAccepted ──> Publishing ──> Completed
           │             │             │                 │                    │                 │
           └─────────────┴─────────────┴─────────────────┴────────────────────┴─────────────────┴──> Failed | Cancelled
    """

    CREATED = "Created"
    BID_ACCEPTED = "BidAccepted"
    RUNNING = "Running"
    WAITING_VERIFICATION = "WaitingVerification"
    RESULT_ACCEPTED = "ResultAccepted"
    PUBLISHING = "Publishing"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (ExecutionState.COMPLETED, ExecutionState.FAILED, ExecutionState.CANCELLED)

    @property
    def job_state(self) -> JobStateType:
        """The seeds' per-node JobStateType for this execution state."""
        return _JOB_STATE[self]


_JOB_STATE = {
    ExecutionState.CREATED: JobStateType.BIDDING,
    ExecutionState.BID_ACCEPTED: JobStateType.WAITING,
    ExecutionState.RUNNING: JobStateType.RUNNING,
    ExecutionState.WAITING_VERIFICATION: JobStateType.VERIFYING,
    ExecutionState.RESULT_ACCEPTED: JobStateType.VERIFYING,
    ExecutionState.PUBLISHING: JobStateType.VERIFYING,
    ExecutionState.COMPLETED: JobStateType.COMPLETED,
    ExecutionState.FAILED: JobStateType.ERROR,
    ExecutionState.CANCELLED: JobStateType.CANCELLED,
}


class JobState(WireEnum):
    """A whole job's state as Bacalhau's requester reports it."""

    NEW = "New"
    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    PARTIAL_ERROR = "PartialError"
    ERROR = "Error"
    CANCELLED = "Cancelled"
