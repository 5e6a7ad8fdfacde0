"""What an execution produces: RunCommandResult, verification, per-shard state."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_serializer, field_validator

from computenode.model.base import Wire
from computenode.model.enums import JobStateType
from computenode.model.job import StorageSpec

# Bacalhau inlines at most this many bytes of each stream in RunCommandResult.
MAX_INLINE_OUTPUT = 2048


class RunCommandResult(Wire):
    """Always serialised with all six keys, empty ones included, as Bacalhau v0.3.23 emits it."""

    stdout: str = Field("", alias="stdout")
    stdout_truncated: bool = Field(False, alias="stdouttruncated")
    stderr: str = Field("", alias="stderr")
    stderr_truncated: bool = Field(False, alias="stderrtruncated")
    exit_code: int = Field(-1, alias="exitCode")
    runner_error: str = Field("", alias="runnerError")

    @field_validator("stdout", "stderr", "runner_error", mode="before")
    @classmethod
    def _none_str(cls, v: Any) -> Any:
        return "" if v is None else v


class VerificationResult(Wire):
    complete: bool = Field(False, alias="Complete")
    result: bool = Field(False, alias="Result")


class JobShardState(Wire):
    node_id: str = Field("", alias="NodeId")
    execution_id: str = Field("", alias="ExecutionId")
    shard_index: int = Field(0, alias="ShardIndex")
    state: JobStateType = Field(JobStateType.BIDDING, alias="State")
    status: str = Field("", alias="Status")
    verification_proposal: bytes = Field(b"", alias="VerificationProposal")
    verification_result: VerificationResult = Field(
        default_factory=VerificationResult, alias="VerificationResult"
    )
    published_results: StorageSpec = Field(default_factory=StorageSpec, alias="PublishedResults")
    run_output: RunCommandResult | None = Field(None, alias="RunOutput")

    @field_serializer("verification_proposal")
    def _b64(self, v: bytes) -> str:
        import base64

        return base64.b64encode(v).decode()
