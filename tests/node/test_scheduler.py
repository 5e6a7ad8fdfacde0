"""The admission rule and the capacity-aware queue (pure logic)."""

from __future__ import annotations

import time

import pytest

from computenode.model import ResourceUsageData as R
from computenode.scheduler import Scheduler


def make(total: R, queue: R | None = None, gpus: list[int] | None = None):
    started: list[tuple[str, tuple[int, ...]]] = []
    s = Scheduler(
        total, queue if queue is not None else total, gpus or [], lambda e, g: started.append((e, g))
    )
    return s, started


def test_two_cpus_run_two_one_cpu_jobs_and_queue_the_rest() -> None:
    s, started = make(R(cpu=2, memory=2**30), queue=R(cpu=2, memory=2**30))
    for i in range(4):
        assert s.reserve(f"e{i}", R(cpu=1, memory=1), ttl_s=60) == []
    assert s.reserve("e5", R(cpu=1, memory=1), ttl_s=60)[0].startswith("queue full: cpu")
    for i in range(4):
        s.enqueue(f"e{i}")
    assert [e for e, _ in started] == ["e0", "e1"]
    s.release("e0")
    assert [e for e, _ in started] == ["e0", "e1", "e2"]
    s.release("e1")
    s.release("e2")
    assert [e for e, _ in started] == ["e0", "e1", "e2", "e3"]


def test_over_total_is_refused_with_amounts() -> None:
    s, _ = make(R(cpu=2, memory=2**30))
    assert s.admit_reasons(R(cpu=3)) == ["over node capacity: cpu: requested 3, allowed 2"]


def test_smaller_job_is_not_held_back_by_a_big_one() -> None:
    s, started = make(R(cpu=2, memory=10))
    s.enqueue("small0", R(cpu=1))
    s.enqueue("big", R(cpu=2))
    s.enqueue("small1", R(cpu=1))
    assert [e for e, _ in started] == ["small0", "small1"]


def test_reservations_expire() -> None:
    s, _ = make(R(cpu=1, memory=10))
    s.reserve("e", R(cpu=1), ttl_s=0)
    time.sleep(0.001)
    assert s.expired() == ["e"]
    s.release("e")
    assert s.pending_usage.is_zero()


def test_gpu_indexes_are_handed_out_and_returned() -> None:
    s, started = make(R(cpu=4, gpu=3), gpus=[0, 1, 2])
    s.enqueue("a", R(cpu=1, gpu=2))
    s.enqueue("b", R(cpu=1, gpu=2))
    assert started == [("a", (0, 1))]
    s.release("a")
    assert started[-1] == ("b", (0, 1))


def test_running_totals_match_the_entries_after_any_sequence() -> None:
    """The scheduler keeps totals as entries come and go; they always equal the sums."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    ops = st.lists(
        st.tuples(st.sampled_from(["reserve", "enqueue", "release"]), st.integers(0, 7)), max_size=60
    )

    @settings(max_examples=200, deadline=None, derandomize=True)
    @given(ops)
    def check(sequence: list[tuple[str, int]]) -> None:
        started: list[str] = []
        s = Scheduler(
            R(cpu=2, memory=8 << 30),
            R(cpu=2),
            [],
            lambda e, g: started.append(e),
        )
        for op, n in sequence:
            eid, usage = f"e{n}", R(cpu=0.1 * (n + 1), memory=(n + 1) << 20)
            if op == "reserve" and eid not in s.reserved and eid not in s.queued and eid not in s.running:
                s.reserve(eid, usage, 60)
            elif op == "enqueue" and eid not in s.queued and eid not in s.running:
                s.enqueue(eid, usage)
            elif op == "release":
                s.release(eid)
            pending = [e.usage for e in [*s.reserved.values(), *s.queued.values()]]
            running = [e.usage for e, _ in s.running.values()]
            assert s.pending_usage.cpu == pytest.approx(sum(u.cpu for u in pending), abs=1e-9)
            assert s.pending_usage.memory == sum(u.memory for u in pending)
            assert s.running_usage.cpu == pytest.approx(sum(u.cpu for u in running), abs=1e-9)
            assert s.running_usage.memory == sum(u.memory for u in running)

    check()
