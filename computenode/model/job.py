"""The v1beta1 Job and its Spec, with the compatibility rules of docs/model.md."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field, field_validator, model_validator

from computenode.model.base import MAX_LIST_ELEMENTS, Wire
from computenode.model.enums import Engine, JobEventType, Network, Publisher, StorageSource, Verifier
from computenode.model.resources import ResourceUsageConfig
from computenode.model.selector import LabelSelectorRequirement


def _none_to_empty(v: Any, empty: Any) -> Any:
    return empty if v is None else v


class StorageSpec(Wire):
    storage_source: StorageSource | None = Field(None, alias="StorageSource")
    name: str = Field("", alias="Name")
    cid: str = Field("", alias="CID")
    url: str = Field("", alias="URL")
    source_path: str = Field("", alias="SourcePath")
    path: str = Field("", alias="path")
    metadata: dict[str, str] = Field(default_factory=dict, alias="Metadata")

    @field_validator("storage_source", mode="before")
    @classmethod
    def _blank_source(cls, v: Any) -> Any:
        return None if v == "" else v

    @field_validator("name", "cid", "url", "source_path", "path", mode="before")
    @classmethod
    def _none_str(cls, v: Any) -> Any:
        return _none_to_empty(v, "")

    @field_validator("metadata", mode="before")
    @classmethod
    def _none_map(cls, v: Any) -> Any:
        return _none_to_empty(v, {})

    def is_empty(self) -> bool:
        return self.storage_source is None and not (self.cid or self.url or self.name or self.path)


class JobSpecDocker(Wire):
    image: str = Field("", alias="Image")
    entrypoint: list[str] = Field(default_factory=list, alias="Entrypoint", max_length=MAX_LIST_ELEMENTS)
    environment_variables: list[str] = Field(
        default_factory=list, alias="EnvironmentVariables", max_length=MAX_LIST_ELEMENTS
    )
    working_directory: str = Field("", alias="WorkingDirectory")

    @field_validator("entrypoint", "environment_variables", mode="before")
    @classmethod
    def _none_list(cls, v: Any) -> Any:
        return _none_to_empty(v, [])

    @field_validator("environment_variables")
    @classmethod
    def _key_value(cls, v: list[str]) -> list[str]:
        for item in v:
            if "=" not in item or item.startswith("="):
                raise ValueError(f"{item!r} is not of the form KEY=VALUE")
        return v


class JobSpecWasm(Wire):
    entry_module: StorageSpec = Field(default_factory=StorageSpec, alias="EntryModule")
    entry_point: str = Field("", alias="EntryPoint")
    parameters: list[str] = Field(default_factory=list, alias="Parameters", max_length=MAX_LIST_ELEMENTS)
    environment_variables: dict[str, str] = Field(default_factory=dict, alias="EnvironmentVariables")
    import_modules: list[StorageSpec] = Field(
        default_factory=list, alias="ImportModules", max_length=MAX_LIST_ELEMENTS
    )

    @field_validator("parameters", "import_modules", mode="before")
    @classmethod
    def _none_list(cls, v: Any) -> Any:
        return _none_to_empty(v, [])

    @field_validator("environment_variables", mode="before")
    @classmethod
    def _none_map(cls, v: Any) -> Any:
        return _none_to_empty(v, {})


class JobSpecLanguage(Wire):
    language: str = Field("", alias="Language")
    language_version: str = Field("", alias="LanguageVersion")
    deterministic: bool = Field(False, alias="DeterministicExecution")
    context: StorageSpec = Field(default_factory=StorageSpec, alias="JobContext")
    command: str = Field("", alias="Command")
    program_path: str = Field("", alias="ProgramPath")
    requirements_path: str = Field("", alias="RequirementsPath")


class NetworkConfig(Wire):
    type: Network = Field(Network.NONE, alias="Type")
    domains: list[str] = Field(default_factory=list, alias="Domains", max_length=MAX_LIST_ELEMENTS)

    @field_validator("type", mode="before")
    @classmethod
    def _blank_type(cls, v: Any) -> Any:
        return Network.NONE if v in (None, "") else v

    @field_validator("domains", mode="before")
    @classmethod
    def _none_list(cls, v: Any) -> Any:
        return _none_to_empty(v, [])


class JobShardingConfig(Wire):
    glob_pattern: str = Field("", alias="GlobPattern")
    batch_size: int = Field(0, alias="BatchSize")
    base_path: str = Field("", alias="GlobPatternBasePath")


class JobExecutionPlan(Wire):
    shards_total: int = Field(0, alias="ShardsTotal", ge=0)


class Deal(Wire):
    concurrency: int = Field(1, alias="Concurrency", ge=0)
    confidence: int = Field(0, alias="Confidence", ge=0)
    min_bids: int = Field(0, alias="MinBids", ge=0)

    @model_validator(mode="after")
    def _confidence_fits(self) -> Deal:
        if self.confidence > max(self.concurrency, 1):
            raise ValueError(f"Confidence {self.confidence} is larger than Concurrency {self.concurrency}")
        return self


class Spec(Wire):
    engine: Engine = Field(Engine.DOCKER, alias="Engine")
    verifier: Verifier = Field(Verifier.NOOP, alias="Verifier")
    publisher: Publisher | None = Field(None, alias="Publisher")
    docker: JobSpecDocker = Field(default_factory=JobSpecDocker, alias="Docker")
    language: JobSpecLanguage = Field(default_factory=JobSpecLanguage, alias="Language")
    wasm: JobSpecWasm = Field(default_factory=JobSpecWasm, alias="Wasm")
    resources: ResourceUsageConfig = Field(default_factory=ResourceUsageConfig, alias="Resources")
    network: NetworkConfig = Field(default_factory=NetworkConfig, alias="Network")
    timeout: float = Field(0.0, alias="Timeout", ge=0)
    inputs: list[StorageSpec] = Field(default_factory=list, alias="inputs", max_length=MAX_LIST_ELEMENTS)
    contexts: list[StorageSpec] = Field(default_factory=list, alias="Contexts", max_length=MAX_LIST_ELEMENTS)
    outputs: list[StorageSpec] = Field(default_factory=list, alias="outputs", max_length=MAX_LIST_ELEMENTS)
    annotations: list[str] = Field(default_factory=list, alias="Annotations", max_length=MAX_LIST_ELEMENTS)
    node_selectors: list[LabelSelectorRequirement] = Field(
        default_factory=list, alias="NodeSelectors", max_length=MAX_LIST_ELEMENTS
    )
    sharding: JobShardingConfig = Field(default_factory=JobShardingConfig, alias="Sharding")
    do_not_track: bool = Field(False, alias="DoNotTrack")
    execution_plan: JobExecutionPlan = Field(default_factory=JobExecutionPlan, alias="ExecutionPlan")
    deal: Deal = Field(default_factory=Deal, alias="Deal")

    @field_validator("engine", "verifier", mode="before")
    @classmethod
    def _blank_enum(cls, v: Any, info: Any) -> Any:
        if v in (None, ""):
            return Engine.DOCKER if info.field_name == "engine" else Verifier.NOOP
        return v

    @field_validator("publisher", mode="before")
    @classmethod
    def _blank_publisher(cls, v: Any) -> Any:
        return None if v == "" else v

    @field_validator("inputs", "contexts", "outputs", "annotations", "node_selectors", mode="before")
    @classmethod
    def _none_list(cls, v: Any) -> Any:
        return _none_to_empty(v, [])

    @field_validator("timeout")
    @classmethod
    def _finite(cls, v: float) -> float:
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError("Timeout must be a finite number of seconds")
        return v

    @model_validator(mode="after")
    def _engine_section(self) -> Spec:
        if self.engine is Engine.DOCKER and not self.docker.image:
            raise ValueError("Docker.Image is required when Engine is Docker")
        if self.engine is Engine.WASM and self.wasm.entry_module.is_empty():
            raise ValueError("Wasm.EntryModule is required when Engine is Wasm")
        return self

    def all_storage_specs(self) -> list[StorageSpec]:
        """Inputs, contexts and the WASM modules: everything the node must fetch."""
        specs = [*self.inputs, *self.contexts]
        if self.engine is Engine.WASM:
            specs += [self.wasm.entry_module, *self.wasm.import_modules]
        return specs


class JobRequester(Wire):
    """The requester node that scheduled the job (set by a Bacalhau requester, not by users)."""

    node_id: str = Field("", alias="RequesterNodeID")
    # A libp2p public key (protobuf) in base64, as Go encodes []byte: the Deterministic verifier's
    # proposal is encrypted for it (verifiers/deterministic.py).
    public_key: str = Field("", alias="RequesterPublicKey")


class Metadata(Wire):
    id: str = Field("", alias="ID")
    created_at: datetime | None = Field(None, alias="CreatedAt")
    client_id: str = Field("", alias="ClientID")
    requester: JobRequester | None = Field(None, alias="Requester")

    @field_validator("created_at", mode="before")
    @classmethod
    def _go_zero_time(cls, v: Any) -> Any:
        # Go emits the zero time for an unset CreatedAt.
        return None if v in ("", "0001-01-01T00:00:00Z") else v


class JobEvent(Wire):
    api_version: str = Field("", alias="APIVersion")
    job_id: str = Field("", alias="JobID")
    shard_index: int = Field(0, alias="ShardIndex")
    execution_id: str = Field("", alias="ExecutionID")
    client_id: str = Field("", alias="ClientID")
    source_node_id: str = Field("", alias="SourceNodeID")
    target_node_id: str = Field("", alias="TargetNodeID")
    event_name: JobEventType | None = Field(None, alias="EventName")
    status: str = Field("", alias="Status")
    event_time: datetime | None = Field(None, alias="EventTime")


class JobStatus(Wire):
    # The node keeps job state itself; a client's Status is accepted and ignored.
    events: list[JobEvent] = Field(default_factory=list, alias="JobEvents", max_length=MAX_LIST_ELEMENTS)


class Job(Wire):
    api_version: str = Field("V1beta1", alias="APIVersion")
    metadata: Metadata = Field(default_factory=Metadata, alias="Metadata")
    spec: Spec = Field(alias="Spec")

    @model_validator(mode="before")
    @classmethod
    def _hoist_compat(cls, data: Any) -> Any:
        """Accept the older flat forms: `ID`/`ClientID`/`CreatedAt` at Job level,
        and `Deal`/`ExecutionPlan` beside Spec rather than inside it (both appear in Bacalhau's own examples)."""
        if not isinstance(data, dict):
            return data
        data = cls.fold_keys(data)
        lower = {k.lower(): k for k in data if isinstance(k, str)}
        meta = data.get("Metadata") or {}
        if isinstance(meta, dict):
            meta = dict(meta)
            meta_lower = {k.lower() for k in meta if isinstance(k, str)}  # YAML keys may be numbers
            for flat in ("id", "clientid", "createdat"):
                if flat in lower and flat not in meta_lower:
                    meta[lower[flat]] = data[lower[flat]]
            data["Metadata"] = meta
        spec = data.get("Spec")
        if isinstance(spec, dict):
            spec = dict(spec)
            spec_lower = {k.lower() for k in spec if isinstance(k, str)}
            for part in ("deal", "executionplan"):
                if part in lower and part not in spec_lower:
                    spec[lower[part]] = data[lower[part]]
            data["Spec"] = spec
        return data

    @property
    def id(self) -> str:
        return self.metadata.id


class SubmitEnvelope(Wire):
    """Seed 002's submit request: `{"data": {"ClientID", "Job"}, "signature", "client_public_key"}`.

    The signature and key are kept but not verified here (the requester API does that).
    """

    data: SubmitData = Field(alias="data")
    signature: str = Field("", alias="signature")
    client_public_key: str = Field("", alias="client_public_key")

    def to_job(self) -> Job:
        """The job, with the envelope's ClientID in Metadata.ClientID when the job has none."""
        job = self.data.job
        if job.metadata.client_id or not self.data.client_id:
            return job
        meta = job.metadata.model_copy(update={"client_id": self.data.client_id})
        return job.model_copy(update={"metadata": meta})


class SubmitData(Wire):
    client_id: str = Field("", alias="ClientID")
    job: Job = Field(alias="Job")


SubmitEnvelope.model_rebuild()
