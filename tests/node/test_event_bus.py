"""The event bus alone: numbering, resume, filters, slow readers, progress rate, close."""

from __future__ import annotations

from computenode.events import DROPPED, LOST, EventBus


async def test_ids_are_consecutive_and_resume_gives_what_followed() -> None:
    bus = EventBus(first_id=100, ring_size=5)
    for i in range(3):
        bus.job(f"j{i}", "InProgress")
    bus.job("j0", "InProgress")  # unchanged: not published
    assert bus.last_id == 102
    with bus.subscribe(after=100) as sub:
        got = [await sub.get(0) for _ in range(3)]
    assert [e.id if e else None for e in got] == [101, 102, None]
    for i in range(5):
        bus.job(f"k{i}", "Completed")
    with bus.subscribe(after=101) as sub:  # 102 fell out of the ring of 5
        first = await sub.get(0)
        assert first is not None and first.kind == LOST and first.id is None
        assert [e.id for e in sub.pending] == [103, 104, 105, 106, 107]
    with bus.subscribe(after=10**12) as sub:  # an ID this process never gave: another numbering
        first = await sub.get(0)
        assert first is not None and first.kind == LOST


async def test_filter_slow_reader_and_close() -> None:
    bus = EventBus(max_pending=3)
    one = bus.subscribe(job_id="a")
    everything = bus.subscribe()
    bus.execution("e1", "a", 0, "Created", "bid made")
    bus.execution("e2", "b", 0, "Created", "bid made")
    assert [e.job_id for e in one.pending] == ["a"]
    for i in range(3):
        bus.job(f"x{i}", "InProgress")
    dropped = await everything.get(0)
    assert dropped is not None and dropped.kind == DROPPED and everything.ended
    assert await everything.get(5) is None  # ended: no wait
    bus.close()
    assert one.ended and (await one.get(0)) is not None and await one.get(5) is None
    assert bus.subscribe().ended
    assert b"event: execution\nid: " in bus._ring[0].sse() and bus._ring[0].sse().endswith(b"\n\n")


async def test_progress_is_rate_limited_within_a_stage_and_forgotten_at_the_end() -> None:
    now = [0.0]
    bus = EventBus(first_id=1, clock=lambda: now[0])
    bus.execution("e1", "j1", 0, "Running", "running")
    bus.progress("e1", "fetching inputs", Bytes=1)
    bus.progress("e1", "fetching inputs", Bytes=2)  # 0 s later: not published, but the latest
    assert (bus.latest_progress("e1") or {}).get("Bytes") == 2
    now[0] = 0.3
    bus.progress("e1", "fetching inputs", Bytes=3)
    bus.progress("e1", "running")  # a new stage always goes
    kept = [e.data for e in bus._ring if e.kind == "progress"]
    assert [(d["Stage"], d.get("Bytes")) for d in kept] == [("fetching inputs", 1), ("fetching inputs", 3),
                                                           ("running", None)]  # fmt: skip
    assert all(d["JobID"] == "j1" for d in kept)
    assert bus.latest_progress("e1") == {
        "ExecutionID": "e1",
        "JobID": "j1",
        "ShardIndex": 0,
        "Stage": "running",
    }
    bus.execution("e1", "j1", 0, "Completed", "results published")
    assert bus.latest_progress("e1") is None
