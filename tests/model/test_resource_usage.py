"""ResourceUsageData arithmetic as Bacalhau's: Add, Sub clamped at 0, Max, Intersect, LessThanEq, Multi, IsZero."""

from __future__ import annotations

import dataclasses

import pytest

from computenode.model import ResourceUsageData as R

A = R(cpu=1.0, memory=100, disk=1000, gpu=1)
B = R(cpu=0.5, memory=300, disk=0, gpu=2)


def test_add() -> None:
    assert A.add(B) == R(1.5, 400, 1000, 3)


def test_sub_clamps_at_zero() -> None:
    assert A.sub(B) == R(0.5, 0, 1000, 0)
    assert B.sub(A) == R(0.0, 200, 0, 1)
    assert R().sub(A) == R()


def test_max() -> None:
    assert A.max(B) == R(1.0, 300, 1000, 2)


def test_intersect_fills_unset_fields() -> None:
    asked = R(cpu=0.25)
    assert asked.intersect(R(cpu=0.1, memory=100 * 2**20)) == R(0.25, 100 * 2**20, 0, 0)
    assert R().intersect(A) == A
    assert A.intersect(B) == A


def test_less_than_eq() -> None:
    assert R(0.5, 100, 0, 1).less_than_eq(A)
    assert A.less_than_eq(A)
    assert not A.less_than_eq(B)
    assert not R(gpu=1).less_than_eq(R(cpu=8, memory=2**40, disk=2**40))
    # Float sums of CPU must still fit: 0.1 + 0.2 is not exactly 0.3.
    assert R(cpu=0.1).add(R(cpu=0.2)).less_than_eq(R(cpu=0.3))


def test_multi() -> None:
    assert A.multi(2) == R(2.0, 200, 2000, 2)
    assert A.multi(0.5) == R(0.5, 50, 500, 0)
    assert A.multi(0).is_zero()


def test_is_zero() -> None:
    assert R().is_zero()
    for field in ("cpu", "memory", "disk", "gpu"):
        assert not dataclasses.replace(R(), **{field: 1}).is_zero()


def test_exceeding_names_requested_and_allowed() -> None:
    over = R(cpu=2.0, memory=2 * 2**30, gpu=1).exceeding(R(cpu=0.5, memory=2**30, disk=0, gpu=0))
    assert over == [
        "cpu: requested 2, allowed 500m",
        "memory: requested 2Gi, allowed 1Gi",
        "gpu: requested 1, allowed 0",
    ]
    assert A.exceeding(A) == []


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        A.cpu = 3  # type: ignore[misc]


def test_to_wire() -> None:
    assert A.to_wire() == {"CPU": 1.0, "Memory": 100, "Disk": 1000, "GPU": 1}
