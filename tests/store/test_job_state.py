"""The stored job state follows every execution change as `job_state` below derives it (the
rule Bacalhau's requester reports), and the migration computes it (and the labels) for a
version-3 database's jobs."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

from computenode.api.views import latest_per_shard
from computenode.model import ExecutionState as S
from computenode.model import JobState
from computenode.store import Execution, InvalidTransition, JobRecord, Store, migrations


def job_state(executions: list[Execution], cancelled: bool) -> JobState:
    """The whole job's state from its executions, the reference the store's SQL must agree with."""
    if any(not ex.state.is_terminal for ex in executions):
        return JobState.IN_PROGRESS  # counts every copy and attempt, not only each shard's latest
    shards = latest_per_shard(executions)
    if not shards:
        return JobState.CANCELLED if cancelled else JobState.NEW
    states = [ex.state for ex in shards.values()]
    if cancelled or all(s is S.CANCELLED for s in states):
        return JobState.CANCELLED
    done = sum(s is S.COMPLETED for s in states)
    if done == len(states):
        return JobState.COMPLETED
    return JobState.PARTIAL_ERROR if done else JobState.ERROR


async def derived(store: Store, job_id: str) -> JobState:
    rec = await store.get_job(job_id)
    return job_state(await store.executions(job_id=job_id), rec.cancelled)


async def test_the_stored_state_matches_the_derivation_through_random_transitions(tmp_path: Path) -> None:
    rng = random.Random(13)
    store = Store(tmp_path / "s.db")
    await store.open()
    try:
        for j in range(30):
            job_id = f"j-{j}"
            await store.put_job(JobRecord(job_id, "{}", owned=True))
            assert (await store.get_job(job_id)).state is JobState.NEW
            live: list[str] = []
            for step in range(rng.randint(1, 25)):
                roll = rng.random()
                if roll < 0.3 or not live:
                    eid = f"e-{j}-{step}"
                    ex = Execution(eid, job_id, rng.randint(0, 2), attempt=rng.randint(0, 2))
                    await store.create(ex)
                    live.append(eid)
                elif roll < 0.35:
                    await store.cancel_job(job_id)
                else:
                    eid = rng.choice(live)
                    cur = await store.get(eid)
                    options = [s for s in S if cur.state.may_move_to(s)]
                    if not options:
                        continue
                    try:
                        await store.transition(eid, rng.choice(options))
                    except InvalidTransition:
                        continue
                assert (await store.get_job(job_id)).state is await derived(store, job_id), (job_id, step)
    finally:
        await store.close()


async def test_migration_4_keeps_data_and_computes_job_states(tmp_path: Path) -> None:
    path = tmp_path / "v3.db"
    db = sqlite3.connect(path, isolation_level=None)
    for statements in migrations.MIGRATIONS[:3]:
        for statement in statements:
            db.execute(statement)
    db.execute("INSERT INTO meta VALUES ('schema_version', '3')")
    record = json.dumps(
        {"usage": {"CPU": 0, "Memory": 0, "Disk": 0, "GPU": 0}, "callback_url": "", "owned": True,
         "attempt": 0, "comment": "", "run_output": None, "proposal": "", "published": None,
         "retryable": False, "bid_expires_at": 0.0}
    )  # fmt: skip
    jobs = {"j-done": ["Completed", "Completed"], "j-half": ["Completed", "Failed"], "j-run": ["Running"],
            "j-bad": ["Failed"], "j-new": []}  # fmt: skip
    for n, (job_id, states) in enumerate(jobs.items()):
        doc = json.dumps({"Spec": {"Annotations": ["a", job_id]}})
        db.execute(
            "INSERT INTO jobs (id, job, owned, client_id, cancelled, created_at, updated_at) VALUES (?, ?, 1, '', 0, ?, ?)",
            (job_id, doc, n, n),
        )
        for shard, state in enumerate(states):
            db.execute(
                "INSERT INTO executions VALUES (?, ?, ?, ?, 1, ?, ?, ?)",
                (f"e-{job_id}-{shard}", job_id, shard, state, record, n, n),
            )
    db.close()

    store = Store(path)
    await store.open()
    try:
        for job_id in jobs:
            assert (await store.get_job(job_id)).state is await derived(store, job_id)
        assert [(await store.get_job(j)).state.value for j in jobs] == [
            "Completed", "PartialError", "InProgress", "Error", "New"
        ]  # fmt: skip
        assert len(await store.executions()) == 6
        page = await store.job_page(label="j-half")
        assert [(s.record.id, s.annotations, s.shards) for s in page.items] == [
            ("j-half", ("a", "j-half"), 2)
        ]
        assert len((await store.job_page(label="a")).items) == 5
    finally:
        await store.close()
