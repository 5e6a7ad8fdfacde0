"""Numbered schema migrations: a fresh database, a version-1 database, a newer one, a failed step."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from computenode.errors import DependencyDown, SchemaTooNew
from computenode.model import ExecutionState as S
from computenode.store import Destination, Execution, JobRecord, Store, migrations

# The schema exactly as computenode wrote it before numbered migrations (schema_version=1).
V1_SCRIPT = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS executions (
    id TEXT PRIMARY KEY, job_id TEXT NOT NULL, shard_index INTEGER NOT NULL,
    state TEXT NOT NULL, version INTEGER NOT NULL, record TEXT NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS executions_job ON executions (job_id, shard_index);
CREATE INDEX IF NOT EXISTS executions_state ON executions (state);
CREATE TABLE IF NOT EXISTS history (
    execution_id TEXT NOT NULL, previous TEXT, new TEXT NOT NULL, comment TEXT NOT NULL, time REAL NOT NULL);
CREATE INDEX IF NOT EXISTS history_execution ON history (execution_id);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, job TEXT NOT NULL, owned INTEGER NOT NULL, client_id TEXT NOT NULL,
    cancelled INTEGER NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS callbacks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, url TEXT NOT NULL, body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('schema_version', '1');
"""


def schema(path: Path) -> tuple[int, list[tuple[str, str, str]]]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
        return migrations.schema_version(db), rows
    finally:
        db.close()


def set_version(path: Path, version: int) -> None:
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    db.close()


async def fresh(path: Path) -> None:
    s = Store(path)
    try:
        await s.open()
    finally:
        await s.close()


async def test_a_fresh_database_gets_every_migration(tmp_path: Path) -> None:
    await fresh(tmp_path / "new.db")
    version, _ = schema(tmp_path / "new.db")
    assert version == migrations.SCHEMA_VERSION == len(migrations.MIGRATIONS)


async def test_a_version_1_database_is_adopted_with_its_data(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    db = sqlite3.connect(old)
    db.executescript(V1_SCRIPT)
    db.close()
    await fresh(tmp_path / "new.db")
    if migrations.SCHEMA_VERSION == 1:  # migration 1 is the old schema, to the letter
        assert schema(old) == schema(tmp_path / "new.db")

    s = Store(old)
    await s.open()
    try:
        await s.create(Execution("e-1", "j", 0))
        await s.transition("e-1", S.BID_ACCEPTED, "accepted")
        await s.put_job(JobRecord("j", "{}", owned=True))
    finally:
        await s.close()
    s = Store(old)
    await s.open()
    try:
        assert (await s.get("e-1")).state is S.BID_ACCEPTED
        assert [j.id for j in await s.jobs()] == ["j"]
    finally:
        await s.close()
    assert schema(old) == schema(tmp_path / "new.db")


async def test_a_database_from_a_newer_computenode_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    await fresh(path)
    newer = migrations.SCHEMA_VERSION + 1
    set_version(path, newer)
    s = Store(path)
    with pytest.raises(SchemaTooNew, match=f"schema version {newer}.*up to {migrations.SCHEMA_VERSION}"):
        await s.open()
    await s.close()
    assert schema(path)[0] == newer  # untouched


async def test_an_appended_migration_runs_once_in_its_own_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "db"
    await fresh(path)
    known = len(migrations.MIGRATIONS)
    broken = ("CREATE INDEX jobs_client ON jobs (client_id)", "CREATE TABLE nope (")
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS, broken))
    with pytest.raises(sqlite3.OperationalError):
        await fresh(path)
    version, rows = schema(path)
    assert version == known and "jobs_client" not in {name for _, name, _ in rows}  # rolled back

    good = ("CREATE INDEX jobs_client ON jobs (client_id)",)
    monkeypatch.setattr(migrations, "MIGRATIONS", (*migrations.MIGRATIONS[:known], good))
    await fresh(path)
    await fresh(path)  # already applied: nothing to do
    version, rows = schema(path)
    assert version == known + 1 and "jobs_client" in {name for _, name, _ in rows}


async def test_a_file_that_is_no_database_is_a_store_down(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database" * 100)
    s = Store(path)
    with pytest.raises(DependencyDown, match="store: .*garbage.db") as caught:
        await s.open()
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)
    await s.close()


async def test_migration_3_splits_version_2_callback_urls_into_destination_and_name(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    db = sqlite3.connect(path)
    with db:
        for statement in (*migrations.MIGRATIONS[0], *migrations.MIGRATIONS[1]):
            db.execute(statement)
        db.execute("INSERT INTO meta VALUES ('schema_version', '2')")
        db.executemany(
            "INSERT INTO callbacks (url, body, attempts, next_at) VALUES (?, ?, ?, ?)",
            [
                ("http://127.0.0.1:9/cb/on_run_complete", "1", 3, 50.0),
                ("https://requester.example/on_cancel_complete", "2", 0, 60.0),
                ("http://127.0.0.1:9/cb/on_publish_complete", "3", 0, 70.0),
            ],
        )
    db.close()
    s = Store(path)
    await s.open()
    try:
        got = [(c.id, str(c.destination), c.name, c.body, c.attempts, c.next_at) for c in await s.callbacks()]
        assert got == [
            (1, "http:http://127.0.0.1:9/cb", "on_run_complete", "1", 3, 50.0),
            (2, "http:https://requester.example", "on_cancel_complete", "2", 0, 60.0),
            (3, "http:http://127.0.0.1:9/cb", "on_publish_complete", "3", 0, 70.0),
        ]
        # The next callback is queued behind them.
        assert await s.add_callback(Destination("http", "http://127.0.0.1:9/cb"), "on_run_complete", "4") == 4
    finally:
        await s.close()
    await fresh(tmp_path / "fresh.db")
    assert schema(path) == schema(tmp_path / "fresh.db")
