"""Resources a job asks for (strings on the wire) and resource usage (numbers inside)."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, field_validator

from computenode.model.base import Wire
from computenode.model.quantity import format_bytes, format_cpu, parse_bytes, parse_cpu, parse_gpu


class ResourceUsageConfig(Wire):
    """The spec's Resources: quantities as strings; an empty string means unset."""

    cpu: str = Field("", alias="CPU")
    memory: str = Field("", alias="Memory")
    disk: str = Field("", alias="Disk")
    gpu: str = Field("", alias="GPU")

    @field_validator("cpu", "memory", "disk", "gpu", mode="before")
    @classmethod
    def _as_text(cls, v: object) -> object:
        if v is None:
            return ""
        if isinstance(v, int | float) and not isinstance(v, bool):
            return str(v)
        return v

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, v: str) -> str:
        if v.strip():
            parse_cpu(v)
        return v

    @field_validator("memory", "disk")
    @classmethod
    def _size(cls, v: str) -> str:
        if v.strip():
            parse_bytes(v)
        return v

    @field_validator("gpu")
    @classmethod
    def _gpu(cls, v: str) -> str:
        if v.strip():
            parse_gpu(v)
        return v

    def to_usage(self) -> ResourceUsageData:
        """Numbers for the fields that are set; unset fields are 0."""
        return ResourceUsageData(
            cpu=parse_cpu(self.cpu) if self.cpu.strip() else 0.0,
            memory=parse_bytes(self.memory) if self.memory.strip() else 0,
            disk=parse_bytes(self.disk) if self.disk.strip() else 0,
            gpu=parse_gpu(self.gpu) if self.gpu.strip() else 0,
        )


@dataclass(frozen=True, slots=True)
class ResourceUsageData:
    """Resource amounts: CPU in cores, memory and disk in bytes, GPU a count."""

    cpu: float = 0.0
    memory: int = 0
    disk: int = 0
    gpu: int = 0

    def add(self, other: ResourceUsageData) -> ResourceUsageData:
        return ResourceUsageData(
            self.cpu + other.cpu, self.memory + other.memory, self.disk + other.disk, self.gpu + other.gpu
        )

    def sub(self, other: ResourceUsageData) -> ResourceUsageData:
        """Difference, clamped at zero per field."""
        return ResourceUsageData(
            max(0.0, self.cpu - other.cpu),
            max(0, self.memory - other.memory),
            max(0, self.disk - other.disk),
            max(0, self.gpu - other.gpu),
        )

    def max(self, other: ResourceUsageData) -> ResourceUsageData:
        return ResourceUsageData(
            max(self.cpu, other.cpu),
            max(self.memory, other.memory),
            max(self.disk, other.disk),
            max(self.gpu, other.gpu),
        )

    def intersect(self, other: ResourceUsageData) -> ResourceUsageData:
        """Fields that are zero here take other's value (Bacalhau: defaults for unset fields)."""
        return ResourceUsageData(
            self.cpu or other.cpu, self.memory or other.memory, self.disk or other.disk, self.gpu or other.gpu
        )

    def multi(self, factor: float) -> ResourceUsageData:
        return ResourceUsageData(
            self.cpu * factor, int(self.memory * factor), int(self.disk * factor), int(self.gpu * factor)
        )

    def less_than_eq(self, other: ResourceUsageData) -> bool:
        # A tiny tolerance: 0.1 + 0.2 CPUs must fit in 0.3.
        return (
            self.cpu <= other.cpu + 1e-9
            and self.memory <= other.memory
            and self.disk <= other.disk
            and self.gpu <= other.gpu
        )

    def is_zero(self) -> bool:
        return self.cpu == 0 and self.memory == 0 and self.disk == 0 and self.gpu == 0

    def exceeding(self, limit: ResourceUsageData) -> list[str]:
        """One phrase per field over `limit`, naming requested and allowed amounts."""
        out = []
        if self.cpu > limit.cpu + 1e-9:
            out.append(f"cpu: requested {format_cpu(self.cpu)}, allowed {format_cpu(limit.cpu)}")
        if self.memory > limit.memory:
            out.append(f"memory: requested {format_bytes(self.memory)}, allowed {format_bytes(limit.memory)}")
        if self.disk > limit.disk:
            out.append(f"disk: requested {format_bytes(self.disk)}, allowed {format_bytes(limit.disk)}")
        if self.gpu > limit.gpu:
            out.append(f"gpu: requested {self.gpu}, allowed {limit.gpu}")
        return out

    def to_wire(self) -> dict[str, float | int]:
        return {"CPU": self.cpu, "Memory": self.memory, "Disk": self.disk, "GPU": self.gpu}
