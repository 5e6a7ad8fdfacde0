"""The SQLite store: transitions checked atomically, history kept, survives reopening."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from computenode.model import ExecutionState as S
from computenode.model import JobState, ResourceUsageData, RunCommandResult
from computenode.store import Destination, Execution, InvalidTransition, JobRecord, NotFound, Store


async def test_lifecycle_and_history(store: Store) -> None:
    ex = await store.create(
        Execution("e-1", "j-1", 0, usage=ResourceUsageData(cpu=0.5, memory=1024)), "bid made"
    )
    assert repr(ex) == "<Execution e-1 job=j-1#0 Created v1>"
    ex = await store.transition("e-1", S.BID_ACCEPTED, "accepted")
    ex = await store.transition("e-1", S.RUNNING, "running", version=2)
    result = RunCommandResult(stdout="hi", exit_code=0)
    ex = await store.transition(
        "e-1", S.WAITING_VERIFICATION, "proposed", run_output=result, proposal=b"\x01"
    )
    got = await store.get("e-1")
    assert got.state is S.WAITING_VERIFICATION and got.version == 4
    assert got.run_output == result and got.proposal == b"\x01" and got.usage.cpu == 0.5
    hist = await store.history("e-1")
    assert [(t.previous, t.new) for t in hist] == [
        (None, S.CREATED), (S.CREATED, S.BID_ACCEPTED), (S.BID_ACCEPTED, S.RUNNING),
        (S.RUNNING, S.WAITING_VERIFICATION),
    ]  # fmt: skip
    assert hist[1].comment == "accepted"


async def test_lifecycle_version_and_terminal_are_enforced(store: Store) -> None:
    await store.create(Execution("e-2", "j", 0))
    with pytest.raises(InvalidTransition, match="from Created to Running"):
        await store.transition("e-2", S.RUNNING)
    with pytest.raises(InvalidTransition, match="version"):
        await store.transition("e-2", S.BID_ACCEPTED, version=7)
    await store.transition("e-2", S.CANCELLED, "bid rejected")
    with pytest.raises(InvalidTransition, match="from Cancelled to Running: it has already ended"):
        await store.transition("e-2", S.RUNNING)
    with pytest.raises(NotFound):
        await store.get("nope")


async def test_survives_reopen_and_lists_active(tmp_path: Path) -> None:
    s = Store(tmp_path / "db.sqlite")
    await s.open()
    await s.create(Execution("a", "j", 0))
    await s.create(Execution("b", "j", 1))
    await s.transition("b", S.CANCELLED, "bid rejected")
    await s.put_job(JobRecord("j", "{}", owned=True))
    await s.set_meta("draining", "graceful")
    await s.close()
    s = Store(tmp_path / "db.sqlite")
    await s.open()
    try:
        assert [e.id for e in await s.active()] == ["a"]
        assert (await s.get_job("j")).owned
        assert await s.get_meta("draining") == "graceful"
        assert (await s.counts()) == {S.CREATED: 1, S.CANCELLED: 1}
    finally:
        await s.close()


A = Destination("http", "http://127.0.0.1:1/a")
B = Destination("http", "http://127.0.0.1:2/b")


async def test_a_destination_s_head_is_its_oldest_callback(store: Store) -> None:
    ids = [
        await store.add_callback(A, "on_run_complete", "1"),
        await store.add_callback(B, "on_run_complete", "2"),
        await store.add_callback(A, "on_publish_complete", "3"),
    ]
    assert ids == sorted(ids) and len(set(ids)) == 3
    head = await store.callback_head(A)
    assert head is not None and (head.id, head.name, head.body) == (ids[0], "on_run_complete", "1")
    assert head.destination == A and head.attempts == 0
    assert await store.callback_head(Destination("http", "http://127.0.0.1:3/c")) is None
    # A retried head stays the head: the one behind it waits.
    await store.callback_retry(ids[0], next_at=1e12)
    head = await store.callback_head(A)
    assert head is not None and (head.id, head.attempts, head.next_at) == (ids[0], 1, 1e12)
    await store.callback_done(ids[0])
    head = await store.callback_head(A)
    assert head is not None and head.id == ids[2]


async def test_the_heads_are_one_per_destination_and_only_due_ones_when_asked(store: Store) -> None:
    a1 = await store.add_callback(A, "on_run_complete", "a1")
    await store.add_callback(A, "on_run_complete", "a2")
    b1 = await store.add_callback(B, "on_run_complete", "b1")
    assert [c.id for c in await store.callback_heads()] == [a1, b1]
    await store.callback_retry(a1, next_at=1e12)
    # A's head is in backoff: A has nothing due, even though a2 itself would be.
    assert [c.id for c in await store.callback_heads(due_by=1e11)] == [b1]
    assert [c.id for c in await store.callback_heads(due_by=1e12)] == [a1, b1]
    assert [c.id for c in await store.callback_heads(limit=1)] == [a1]


async def test_callbacks_are_listed_and_counted_in_order(store: Store) -> None:
    assert await store.callbacks() == [] and await store.count_callbacks() == 0
    for i, dest in enumerate((A, B, A)):
        await store.add_callback(dest, "on_run_complete", str(i))
    assert [c.body for c in await store.callbacks()] == ["0", "1", "2"]
    assert await store.count_callbacks() == 3


async def test_queued_callbacks_survive_reopening(tmp_path: Path) -> None:
    s = Store(tmp_path / "db.sqlite")
    await s.open()
    try:
        first = await s.add_callback(A, "on_run_complete", "1")
        await s.add_callback(A, "on_publish_complete", "2")
        await s.callback_retry(first, next_at=123.0)
    finally:
        await s.close()
    s = Store(tmp_path / "db.sqlite")
    await s.open()
    try:
        got = [(c.id, c.name, c.attempts, c.next_at) for c in await s.callbacks()][:1]
        assert got == [(first, "on_run_complete", 1, 123.0)]
        assert [c.body for c in await s.callbacks()] == ["1", "2"]
        # A deleted id is not handed out again, so the order holds across restarts.
        await s.callback_done(first)
        await s.callback_done(first + 1)
        assert await s.add_callback(A, "on_run_complete", "3") > first + 1
    finally:
        await s.close()


async def test_concurrent_writes_share_a_commit_and_fail_alone(store: Store) -> None:
    """Group commit: writes queued together go in one transaction; each caller gets its own
    outcome after that commit, and a write that fails its check is undone alone."""
    await store.put_job(JobRecord("j-g", "{}", owned=True))
    for i in range(20):
        await store.create(Execution(f"e-g{i}", "j-g", i))
    before = store.commits
    moves = [store.move(f"e-g{i}", S.BID_ACCEPTED, "accepted") for i in range(20)]
    moves.append(store.move("e-g3", S.RUNNING, "too early", version=1))  # e-g3 is at version 2 by then
    moves.append(store.move("nope", S.RUNNING))
    outcomes = await asyncio.gather(*moves, return_exceptions=True)
    assert all(ex.state is S.BID_ACCEPTED and job is JobState.IN_PROGRESS for ex, job in outcomes[:20])  # type: ignore[misc,union-attr]
    assert isinstance(outcomes[20], InvalidTransition) and isinstance(outcomes[21], NotFound)
    assert store.commits - before < 20  # writers queued behind a commit share the next one
    got = await store.get("e-g3")
    assert (got.state, got.version) == (S.BID_ACCEPTED, 2)  # the failed move left nothing behind
    assert [t.new for t in await store.history("e-g3")] == [S.CREATED, S.BID_ACCEPTED]
    for i in range(20):
        await store.move(f"e-g{i}", S.CANCELLED, "done")
    assert (await store.get_job("j-g")).state is JobState.CANCELLED


async def test_several_transitions_in_one_write_are_each_checked_and_kept(store: Store) -> None:
    await store.put_job(JobRecord("j-m", "{}", owned=True))
    ex = await store.create(
        Execution("e-m", "j-m", 0), "bid made", then=[(S.BID_ACCEPTED, "bid accepted", {})]
    )
    assert (ex.state, ex.version, ex.comment) == (S.BID_ACCEPTED, 2, "bid accepted")
    await store.transition("e-m", S.RUNNING, "running")
    steps = [(S.WAITING_VERIFICATION, "proposed", {"proposal": b"p"}), (S.RESULT_ACCEPTED, "accepted", {})]
    with pytest.raises(InvalidTransition, match="from ResultAccepted to Running"):
        await store.moves("e-m", [*steps, (S.RUNNING, "again", {})])
    assert (await store.get("e-m")).state is S.RUNNING  # a refused step undoes the whole write
    done, job = await store.moves("e-m", [*steps, (S.PUBLISHING, "publishing", {})])
    assert [(e.state, e.version) for e in done] == [
        (S.WAITING_VERIFICATION, 4), (S.RESULT_ACCEPTED, 5), (S.PUBLISHING, 6),
    ]  # fmt: skip
    assert job is JobState.IN_PROGRESS and done[-1].proposal == b"p"
    assert [(t.new, t.comment) for t in await store.history("e-m")] == [
        (S.CREATED, "bid made"), (S.BID_ACCEPTED, "bid accepted"), (S.RUNNING, "running"),
        (S.WAITING_VERIFICATION, "proposed"), (S.RESULT_ACCEPTED, "accepted"), (S.PUBLISHING, "publishing"),
    ]  # fmt: skip
    got = await store.get("e-m")
    assert (got.state, got.version, got.proposal) == (S.PUBLISHING, 6, b"p")
    done, job = await store.moves("e-m", [(S.COMPLETED, "published", {})])
    assert job is JobState.COMPLETED
