"""The error tree: what a user can act on, kept apart from internal faults.

    ComputeNodeError
     ├── SpecError            a job spec or config that does not parse (.errors: field -> message)
     │                        API 400, CLI exit 2
     ├── Rejected             the node will not run this job (.reasons); API 409, CLI exit 1
     ├── ExecutionFailed      an execution could not produce a result (.reason, .retryable)
     │    ├── InputUnavailable    an input could not be fetched or prepared
     │    ├── ImageUnavailable    a Docker image could not be found or pulled
     │    ├── InvalidModule       a WASM module that cannot be run as asked
     │    ├── JobTimeout          the job's own Timeout elapsed (never retried)
     │    ├── OutOfMemory         the job went past its memory limit (never retried)
     │    └── PublishFailed       results could not be published
     ├── StoreError           the execution store refuses a request
     │    ├── NotFound            no such execution or job (API 404)
     │    │    └── JobDeleted      the job was deleted after retention.history_for (API 410)
     │    ├── InvalidTransition   the lifecycle forbids the change (API 409)
     │    └── SchemaTooNew        the database was written by a newer computenode
     ├── DependencyDown       a service the node needs is unreachable (shown in /readyz)
     └── DataDirInUse         another node process holds the data_dir (start-up refused)

Any other exception is a bug: it is logged with its traceback and the execution is
Failed with "internal error, see node log".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from computenode.model.enums import ExecutionState
    from computenode.model.results import RunCommandResult


class ComputeNodeError(Exception):
    """Base of every error the node raises on purpose."""


class SpecError(ComputeNodeError):
    """Input that does not parse; `errors` is a list of (field path, message)."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{f}: {m}" if f else m for f, m in errors))


class Rejected(ComputeNodeError):
    """The node will not run a job; every reason is listed."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__("; ".join(reasons))


class ExecutionFailed(ComputeNodeError):
    """An execution ended without a result of the job's own making.

    `reason` is the sentence given to the user (RunCommandResult.runnerError);
    `result` keeps what the job printed before it failed, when it ran at all.
    """

    retryable: bool = False

    def __init__(
        self, reason: str, *, retryable: bool | None = None, result: RunCommandResult | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.result = result
        if retryable is not None:
            self.retryable = retryable


class InputUnavailable(ExecutionFailed):
    retryable = True


class ImageUnavailable(ExecutionFailed):
    pass


class InvalidModule(ExecutionFailed):
    pass


class JobTimeout(ExecutionFailed):
    pass


class OutOfMemory(ExecutionFailed):
    pass


class PublishFailed(ExecutionFailed):
    retryable = True


class StoreError(ComputeNodeError):
    """The execution store refuses a request (computenode/store)."""


class NotFound(StoreError):
    """No execution or job by that ID."""


class JobDeleted(NotFound):
    """The job was deleted after retention.history_for; its tombstone keeps the ID (`job_id`)."""

    def __init__(self, job_id: str, deleted_at: float) -> None:
        self.job_id = job_id
        self.deleted_at = deleted_at
        super().__init__(f"job {job_id} ended long ago and was deleted after retention.history_for")


class InvalidTransition(StoreError):
    """The lifecycle (model/enums.py TRANSITIONS) or a concurrent change forbids moving the execution."""

    def __init__(self, execution_id: str, current: ExecutionState, new: ExecutionState, why: str) -> None:
        self.execution_id = execution_id
        self.current = current
        self.new = new
        super().__init__(f"execution {execution_id} cannot move from {current.value} to {new.value}: {why}")


class SchemaTooNew(StoreError):
    """The database's schema version is newer than this code's migrations."""

    def __init__(self, path: str, found: int, known: int) -> None:
        self.found = found
        self.known = known
        super().__init__(
            f"store {path} has schema version {found}, but this computenode knows versions up to {known}: "
            "run the newer computenode that wrote it, or point node.data_dir elsewhere"
        )


class DependencyDown(ComputeNodeError):
    """A service the node depends on does not answer."""

    def __init__(self, dependency: str, reason: str) -> None:
        self.dependency = dependency
        self.reason = reason
        super().__init__(f"{dependency}: {reason}")


class DataDirInUse(ComputeNodeError):
    """Another process holds the data_dir: two nodes on one store would run every shard twice."""

    def __init__(self, data_dir: str, pid: str) -> None:
        self.data_dir, self.pid = data_dir, pid
        super().__init__(f"data_dir {data_dir} is in use by pid {pid or '(unknown)'}")
