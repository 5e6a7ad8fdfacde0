"""The SQLite store: transitions checked atomically, history kept, survives reopening."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from computenode.model import ExecutionState as S
from computenode.model import ResourceUsageData, RunCommandResult
from computenode.store import Execution, InvalidTransition, JobRecord, NotFound, Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(tmp_path / "db.sqlite")
    await s.open()
    yield s
    await s.close()


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


async def test_callbacks_queue(store: Store) -> None:
    await store.add_callback("http://127.0.0.1:1/on_run_complete", "{}")
    [cb] = await store.due_callbacks(now=1e12)
    await store.callback_retry(cb.id, next_at=1e12 + 10)
    assert await store.due_callbacks(now=1e12) == []
    await store.callback_done(cb.id)
    assert await store.next_callback_at() is None
