"""Retention (cleanup.py): expired jobs go with their files and rows and leave a tombstone; live
ones stay; work dirs and archives are found by stored timestamps; a backlog goes in batches."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import pytest

from computenode.cleanup import BATCH, Cleaner, clean
from computenode.config import RetentionConfig
from computenode.model import ExecutionState as S
from computenode.store import Execution, JobRecord, Store, Tombstone

DAY = 86400.0
LATER = 31 * DAY  # past the default retention.history_for (30d)


def cleaner_for(store: Store, root: Path, **retention: object) -> Cleaner:
    return Cleaner(store, root / "executions", root / "published", RetentionConfig(**retention))  # type: ignore[arg-type]


async def make_job(store: Store, job_id: str, end: S | None, submission: str = "") -> str:
    """A job with one execution, ended in `end` (None: still running); the execution's ID."""
    await store.put_job(JobRecord(job_id, "{}", True, "c-1", spec_hash="h-" + job_id, submission=submission))
    eid = "e-" + job_id
    await store.create(Execution(eid, job_id, 0, owned=True))
    await store.transition(eid, S.BID_ACCEPTED)
    await store.transition(eid, S.RUNNING)
    path = (S.WAITING_VERIFICATION, S.RESULT_ACCEPTED, S.PUBLISHING, S.COMPLETED)
    for state in path if end is S.COMPLETED else (end,) if end is not None else ():
        await store.transition(eid, state)
    return eid


def touch_files(root: Path, eid: str) -> tuple[Path, Path]:
    work = root / "executions" / eid / "results"
    work.mkdir(parents=True)
    (work / "stdout").write_text("hi")
    archive = root / "published" / f"{eid}.tar.gz"
    archive.parent.mkdir(exist_ok=True)
    archive.write_bytes(b"x" * 100)
    return work.parent, archive


async def test_expired_jobs_go_with_their_files_and_leave_a_tombstone(store: Store, tmp_path: Path) -> None:
    old = await make_job(store, "j-old", S.FAILED, submission="digest-1")
    live = await make_job(store, "j-live", None)
    files = await asyncio.to_thread(touch_files, tmp_path, old)
    live_files = await asyncio.to_thread(touch_files, tmp_path, live)
    cleaner = cleaner_for(store, tmp_path)

    swept = await cleaner.run(now=time.time() + LATER)
    assert (swept.jobs, swept.executions) == (1, 1)
    assert not any(p.exists() for p in files)
    assert await store.executions(job_id="j-old") == [] and await store.history(old) == []
    assert await store.find_job("j-old") is None
    tomb = await store.find_job_or_tombstone("j-old")
    assert isinstance(tomb, Tombstone)
    assert (tomb.id, tomb.spec_hash, tomb.client_id, tomb.owned) == ("j-old", "h-j-old", "c-1", True)
    assert await store.find_submission_or_tombstone("c-1", "digest-1") == tomb
    # A job with a live execution stays, files and all, however old.
    assert (await store.get(live)).state is S.RUNNING and all(p.exists() for p in live_files)
    assert isinstance(await store.find_job_or_tombstone("j-live"), JobRecord)


async def test_a_tombstoned_id_and_submission_never_name_a_new_job(store: Store, tmp_path: Path) -> None:
    await make_job(store, "j-gone", S.COMPLETED, submission="digest-1")
    await cleaner_for(store, tmp_path).run(now=time.time() + LATER)
    for rec in (
        JobRecord("j-gone", "{}", False, requester="http://r"),  # the ID again
        JobRecord("j-new", "{}", True, "c-1", submission="digest-1"),  # the signed submission again
    ):
        with pytest.raises(sqlite3.IntegrityError, match="tombstoned"):
            await store.claim_job(rec)
    with pytest.raises(sqlite3.IntegrityError, match="tombstoned"):
        await store.create(Execution("e-late", "j-gone", 0))
    assert await store.find_job("j-new") is None


async def test_a_job_waits_for_its_last_execution(store: Store, tmp_path: Path) -> None:
    """Deleted only when every execution is terminal and older than the retention."""
    await asyncio.to_thread(_insert_backlog, store.path, 1, 2, time.time() - 40 * DAY)  # j-0, long ended
    await store.create(Execution("e-retry", "j-0", 2, owned=True))  # one more, still waiting
    cleaner = cleaner_for(store, tmp_path)
    assert (await cleaner.run()).jobs == 0
    await store.transition("e-retry", S.CANCELLED)
    assert (await cleaner.run()).jobs == 0  # ended now: not old enough yet
    assert len(await store.executions(job_id="j-0")) == 3
    assert (await cleaner.run(now=time.time() + LATER)).jobs == 1
    assert await store.executions(job_id="j-0") == []


async def test_zero_keeps_history_forever_but_files_still_age(store: Store, tmp_path: Path) -> None:
    eid = await make_job(store, "j-1", S.COMPLETED)
    work, archive = await asyncio.to_thread(touch_files, tmp_path, eid)
    cleaner = cleaner_for(store, tmp_path, history_for=0, results_max_age="7d")
    assert not await cleaner.run(now=time.time() + 10)  # within SWEEP_GRACE_S
    # A work dir the runner left (it removes its own) goes once the grace is over; the archive stays.
    assert (await cleaner.run(now=time.time() + 3600)).paths == 1 and not work.exists() and archive.exists()
    swept = await cleaner.run(now=time.time() + 8 * DAY)
    assert swept.paths == 1 and not archive.exists()
    assert (await store.get(eid)).state is S.COMPLETED
    # Swept once: the cursor has moved past it.
    assert await store.get_meta("cleanup.work_dirs") is not None
    assert not await cleaner.run(now=time.time() + 400 * DAY)


async def test_failed_work_dirs_are_kept_for_keep_failed_for(store: Store, tmp_path: Path) -> None:
    eid = await make_job(store, "j-1", S.FAILED)
    work, _ = await asyncio.to_thread(touch_files, tmp_path, eid)
    cleaner = cleaner_for(store, tmp_path, keep_failed_for="1h")
    await cleaner.run(now=time.time() + 1800)
    assert work.exists()
    await cleaner.run(now=time.time() + 7200)
    assert not work.exists()


async def test_orphans_are_swept_at_start_up(store: Store, tmp_path: Path) -> None:
    eid = await make_job(store, "j-1", None)
    kept = await asyncio.to_thread(touch_files, tmp_path, eid)
    orphans = await asyncio.to_thread(touch_files, tmp_path, "e-unknown")
    stray = tmp_path / "published" / ".e-x.tar.gz.1.tmp"
    await asyncio.to_thread(stray.write_bytes, b"half")
    freed = await clean(cleaner_for(store, tmp_path), orphans=True)
    assert freed >= 100 + 2 + 4
    assert all(p.exists() for p in kept) and not any(p.exists() for p in orphans) and not stray.exists()


def _insert_backlog(path: Path, jobs: int, per_job: int, ended_at: float) -> None:
    """`jobs` ended jobs of `per_job` executions each, with history, written straight to the store."""
    record = json.dumps(
        {
            "usage": {"CPU": 0, "Memory": 0, "Disk": 0, "GPU": 0},
            "callback_url": "",
            "owned": True,
            "attempt": 0,
            "comment": "",
            "run_output": None,
            "proposal": "",
            "published": None,
            "retryable": False,
            "bid_expires_at": 0,
        }
    )
    db = sqlite3.connect(path, isolation_level=None)
    try:
        with db:
            db.execute("BEGIN")
            for j in range(jobs):
                jid = f"j-{j}"
                db.execute(
                    "INSERT INTO jobs (id, job, owned, client_id, cancelled, created_at, updated_at)"
                    " VALUES (?, '{}', 1, '', 0, ?, ?)",
                    (jid, ended_at, ended_at),
                )
                for k in range(per_job):
                    eid = f"e-{j}-{k}"
                    db.execute(
                        "INSERT INTO executions (id, job_id, shard_index, state, version, record, created_at,"
                        " updated_at) VALUES (?, ?, ?, 'Completed', 7, ?, ?, ?)",
                        (eid, jid, k, record, ended_at, ended_at),
                    )
                    db.executemany(
                        "INSERT INTO history VALUES (?, NULL, ?, '', ?)",
                        [(eid, s, ended_at) for s in ("Created", "Running", "Completed")],
                    )
    finally:
        db.close()


async def test_a_big_backlog_is_deleted_in_batches_without_blocking_the_loop(
    store: Store, tmp_path: Path
) -> None:
    """20,000 executions: every transaction holds about BATCH rows, the loop only hands them on
    (the loopblock plugin fails the test on a blocking callback)."""
    ended = time.time() - 40 * DAY
    await asyncio.to_thread(_insert_backlog, store.path, 2000, 10, ended)
    live = await make_job(store, "j-live", None)
    cleaner = cleaner_for(store, tmp_path)
    swept = await cleaner.run()
    assert (swept.jobs, swept.executions) == (2000, 20_000)
    assert len(swept.batches) >= 20_000 // BATCH and max(swept.batches) <= BATCH + BATCH // 10
    assert sum((await store.counts()).values()) == 1 and (await store.get(live)).state is S.RUNNING
    assert await store.history("e-0-0") == []
    assert isinstance(await store.find_job_or_tombstone("j-1999"), Tombstone)
