"""Quantities as Bacalhau v0.3.23 reads them (CPU in Kubernetes form, every size unit binary), garbage an error."""

from __future__ import annotations

import json

import pytest

from computenode.errors import SpecError
from computenode.model import ResourceUsageConfig, parse_job
from computenode.model.quantity import format_bytes, format_cpu, parse_bytes, parse_cpu, parse_gpu

MI, GI = 2**20, 2**30


@pytest.mark.parametrize(
    ("text", "cores"),
    [("100m", 0.1), ("500m", 0.5), ("0.5", 0.5), ("2", 2.0), ("1.5", 1.5), (".25", 0.25), ("2000m", 2.0),
     (" 1 ", 1.0), ("1e3m", 1.0), ("250000u", 0.25), ("1k", 1000.0), (2, 2.0), (0.5, 0.5), ("0", 0.0)],
)  # fmt: skip
def test_cpu(text: str | float, cores: float) -> None:
    assert parse_cpu(text) == pytest.approx(cores)


@pytest.mark.parametrize(
    "text", ["", "lots", "1 cpu", "-1", "1x", "m", "1..5", "1mm", "1MI", True, "nan", "inf"]
)
def test_cpu_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="not a CPU quantity"):
        parse_cpu(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("100Mi", 100 * MI), ("100mb", 104857600), ("100MB", 100 * MI), ("100m", 100 * MI), ("100M", 100 * MI),
        ("2Gi", 2 * GI), ("2gi", 2 * GI), ("1GB", 2**30), ("1gb", 2**30), ("1G", GI), ("1GiB", GI),
        ("1 GiB", GI), ("512", 512), ("512b", 512), ("512B", 512), ("1k", 1024), ("1KB", 1024), ("1Ki", 1024),
        ("1.5Gi", 3 * GI // 2), ("1Ti", 2**40), ("1PB", 2**50), ("1e3", 1000), (4096, 4096), (0, 0),
    ],
)  # fmt: skip
def test_sizes_are_binary(text: str | int, size: int) -> None:
    assert parse_bytes(text) == size


@pytest.mark.parametrize("text", ["12 potatoes", "", "-1", "1XB", "Mi", "1.2.3", "ten", True, -5, "16Ei"])
def test_size_garbage(text: str | int) -> None:
    with pytest.raises(ValueError, match="not a size|too large"):
        parse_bytes(text)


@pytest.mark.parametrize(("text", "n"), [("0", 0), ("1", 1), (" 8 ", 8), (3, 3)])
def test_gpu(text: str | int, n: int) -> None:
    assert parse_gpu(text) == n


@pytest.mark.parametrize("text", ["1.5", "one", "-1", "", "1m", -1, True])
def test_gpu_garbage(text: str | int) -> None:
    with pytest.raises(ValueError, match="whole number"):
        parse_gpu(text)


def test_empty_strings_are_unset() -> None:
    usage = ResourceUsageConfig(cpu="", memory="", disk="", gpu="").to_usage()
    assert usage.is_zero()


def test_config_to_usage() -> None:
    usage = ResourceUsageConfig.model_validate(
        {"CPU": "250m", "Memory": "100mb", "Disk": "1GB", "GPU": "2"}
    ).to_usage()
    assert (usage.cpu, usage.memory, usage.disk, usage.gpu) == (0.25, 104857600, 2**30, 2)


def test_numbers_on_the_wire_are_kept_as_text() -> None:
    # YAML turns `CPU: 2` and `Memory: 1048576` into numbers; they mean the same as the strings.
    cfg = ResourceUsageConfig.model_validate({"cpu": 2, "memory": 1048576, "gpu": 1, "disk": 0.5})
    assert (cfg.cpu, cfg.memory, cfg.gpu) == ("2", "1048576", "1")
    assert cfg.to_usage().memory == MI


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("Memory", "12 potatoes", "'12 potatoes' is not a size"),
        ("Disk", "lots", "'lots' is not a size"),
        ("CPU", "fast", "'fast' is not a CPU quantity"),
        ("GPU", "1.5", "'1.5' is not a whole number of GPUs"),
    ],
)
def test_garbage_names_the_field(field: str, value: str, message: str) -> None:
    doc = {"Spec": {"Engine": "Docker", "Docker": {"Image": "x"}, "Resources": {field: value}}}
    with pytest.raises(SpecError) as info:
        parse_job(json.dumps(doc))
    assert info.value.errors == [(f"Spec.Resources.{field}", message)]
    assert str(info.value) == f"Spec.Resources.{field}: {message}"


def test_format_round_trips() -> None:
    for n in (0, 1, 1000, MI, 100 * MI, 3 * GI, 2**40 + 1):
        assert parse_bytes(format_bytes(n)) == n
    for c in (0.0, 0.1, 0.25, 1.0, 2.0, 1.5):
        assert parse_cpu(format_cpu(c)) == pytest.approx(c)
    assert (format_bytes(100 * MI), format_cpu(0.5), format_cpu(2.0)) == ("100Mi", "500m", "2")
