"""The enums of Bacalhau's v1beta1 model, parsed case-insensitively, emitted as the seeds spell them."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

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

    TRANSITIONS below is the lifecycle; the store refuses any other move. The moves
    computenode/compute.py makes:

        Created ──> BidAccepted ──> Running ──> WaitingVerification ──> ResultAccepted ──> Publishing ──> Completed
           │             │             │                 │                    │              │  ↺
           │             └─────────────┴─────────────────┴────────────────────┴──────────────┴──> Failed
           └─────────────┴─────────────┴─────────────────┴────────────────────┴──────────────┴──> Cancelled

    Created never fails: it is cancelled (bid rejected or expired, restart) or accepted.
    Publishing -> Publishing is a publish resumed after a restart.
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
        return not TRANSITIONS[self]

    def may_move_to(self, new: ExecutionState) -> bool:
        return new in TRANSITIONS[self]

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


_S = ExecutionState

# from-state -> the states it may move to; terminal states move nowhere.
TRANSITIONS: Mapping[ExecutionState, frozenset[ExecutionState]] = MappingProxyType(
    {
        _S.CREATED: frozenset({_S.BID_ACCEPTED, _S.CANCELLED}),
        _S.BID_ACCEPTED: frozenset({_S.RUNNING, _S.FAILED, _S.CANCELLED}),
        _S.RUNNING: frozenset({_S.WAITING_VERIFICATION, _S.FAILED, _S.CANCELLED}),
        _S.WAITING_VERIFICATION: frozenset({_S.RESULT_ACCEPTED, _S.FAILED, _S.CANCELLED}),
        _S.RESULT_ACCEPTED: frozenset({_S.PUBLISHING, _S.FAILED, _S.CANCELLED}),
        _S.PUBLISHING: frozenset({_S.PUBLISHING, _S.COMPLETED, _S.FAILED, _S.CANCELLED}),
        _S.COMPLETED: frozenset(),
        _S.FAILED: frozenset(),
        _S.CANCELLED: frozenset(),
    }
)


class JobState(WireEnum):
    """A whole job's state as Bacalhau's requester reports it."""

    NEW = "New"
    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    PARTIAL_ERROR = "PartialError"
    ERROR = "Error"
    CANCELLED = "Cancelled"
