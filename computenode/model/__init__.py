"""Bacalhau's v1beta1 wire model: no I/O, nothing of the daemon."""

from computenode.model.enums import (
    Engine,
    ExecutionState,
    JobEventType,
    JobState,
    JobStateType,
    Locality,
    Network,
    Publisher,
    StorageSource,
    Verifier,
)
from computenode.model.job import (
    Deal,
    Job,
    JobEvent,
    JobExecutionPlan,
    JobShardingConfig,
    JobSpecDocker,
    JobSpecLanguage,
    JobSpecWasm,
    Metadata,
    NetworkConfig,
    Spec,
    StorageSpec,
    SubmitEnvelope,
)
from computenode.model.parse import job_from_document, load_document, parse_job, spec_error
from computenode.model.resources import ResourceUsageConfig, ResourceUsageData
from computenode.model.results import MAX_INLINE_OUTPUT, JobShardState, RunCommandResult, VerificationResult
from computenode.model.selector import LabelSelectorRequirement, Operator

__all__ = [
    "MAX_INLINE_OUTPUT", "Deal", "Engine", "ExecutionState", "Job", "JobEvent", "JobEventType",
    "JobExecutionPlan", "JobShardState", "JobShardingConfig", "JobSpecDocker", "JobSpecLanguage",
    "JobSpecWasm", "JobState", "JobStateType", "LabelSelectorRequirement", "Locality", "Metadata",
    "Network", "NetworkConfig", "Operator", "Publisher", "ResourceUsageConfig", "ResourceUsageData",
    "RunCommandResult", "Spec", "StorageSource", "StorageSpec", "SubmitEnvelope", "VerificationResult",
    "Verifier", "job_from_document", "load_document", "parse_job", "spec_error",
]  # fmt: skip
