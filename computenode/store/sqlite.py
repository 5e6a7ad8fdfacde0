"""Persistent store: executions with their history, owned jobs, pending callbacks (SQLite, WAL).

Every call runs on one dedicated thread so the loop never blocks and SQLite sees
one writer. Updates check the expected state (and version when given); a
terminal execution is never updated.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from computenode.model import ExecutionState, ResourceUsageData, RunCommandResult, StorageSpec
from computenode.store.execution import Callback, Execution, JobRecord, Transition

T = TypeVar("T")

SCHEMA_VERSION = 1
_SCHEMA = """
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
"""


class NotFound(LookupError):
    pass


class InvalidTransition(ValueError):
    """The execution is not in a state that allows the change (API 409)."""


def _encode(ex: Execution) -> str:
    return json.dumps(
        {
            "usage": ex.usage.to_wire(),
            "callback_url": ex.callback_url,
            "owned": ex.owned,
            "attempt": ex.attempt,
            "comment": ex.comment,
            "run_output": ex.run_output.to_wire() if ex.run_output else None,
            "proposal": base64.b64encode(ex.proposal).decode(),
            "published": ex.published.to_wire() if ex.published else None,
            "retryable": ex.retryable,
            "bid_expires_at": ex.bid_expires_at,
        }
    )


def _decode(row: sqlite3.Row) -> Execution:
    r = json.loads(row["record"])
    u = r["usage"]
    return Execution(
        id=row["id"],
        job_id=row["job_id"],
        shard_index=row["shard_index"],
        state=ExecutionState(row["state"]),
        version=row["version"],
        usage=ResourceUsageData(u["CPU"], u["Memory"], u["Disk"], u["GPU"]),
        callback_url=r["callback_url"],
        owned=r["owned"],
        attempt=r["attempt"],
        comment=r["comment"],
        run_output=RunCommandResult.model_validate(r["run_output"]) if r["run_output"] else None,
        proposal=base64.b64decode(r["proposal"]),
        published=StorageSpec.model_validate(r["published"]) if r["published"] else None,
        retryable=r["retryable"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        bid_expires_at=r["bid_expires_at"],
    )


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._db: sqlite3.Connection | None = None

    # -- plumbing ---------------------------------------------------------------------------
    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def open(self) -> None:
        await self._call(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(_SCHEMA)
        db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            await self._call(self._db.close)
            self._db = None
        self._pool.shutdown(wait=True)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    async def check(self) -> str | None:
        """None when the store takes writes, else why not (for /readyz)."""
        try:
            await self._call(self._probe_write)
        except (sqlite3.Error, RuntimeError, OSError) as exc:
            return f"store not writable: {exc}"
        return None

    def _probe_write(self) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('probe', ?)", (str(time.time()),))

    # -- meta -------------------------------------------------------------------------------
    async def get_meta(self, key: str) -> str | None:
        def q() -> str | None:
            row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return row["value"] if row else None

        return await self._call(q)

    async def set_meta(self, key: str, value: str) -> None:
        await self._call(lambda: self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value)))

    # -- executions -------------------------------------------------------------------------
    async def create(self, ex: Execution, comment: str = "") -> Execution:
        now = time.time()
        ex = replace(ex, created_at=now, updated_at=now, comment=comment)

        def q() -> None:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.execute(
                    "INSERT INTO executions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (ex.id, ex.job_id, ex.shard_index, ex.state.value, ex.version, _encode(ex), now, now),
                )
                self.db.execute(
                    "INSERT INTO history VALUES (?, NULL, ?, ?, ?)", (ex.id, ex.state.value, comment, now)
                )

        await self._call(q)
        return ex

    async def get(self, execution_id: str) -> Execution:
        def q() -> Execution:
            row = self.db.execute("SELECT * FROM executions WHERE id = ?", (execution_id,)).fetchone()
            if row is None:
                raise NotFound(execution_id)
            return _decode(row)

        return await self._call(q)

    async def list(
        self, state: ExecutionState | None = None, job_id: str | None = None, limit: int = 1000
    ) -> list[Execution]:
        sql, args = "SELECT * FROM executions WHERE 1=1", []
        if state is not None:
            sql += " AND state = ?"
            args.append(state.value)
        if job_id is not None:
            sql += " AND job_id = ?"
            args.append(job_id)
        sql += " ORDER BY created_at DESC LIMIT ?"
        args.append(limit)
        return await self._call(lambda: [_decode(r) for r in self.db.execute(sql, args).fetchall()])

    async def active(self) -> list[Execution]:
        terminal = tuple(s.value for s in ExecutionState if s.is_terminal)
        sql = f"SELECT * FROM executions WHERE state NOT IN ({','.join('?' * len(terminal))}) ORDER BY created_at"
        return await self._call(lambda: [_decode(r) for r in self.db.execute(sql, terminal).fetchall()])

    async def transition(
        self,
        execution_id: str,
        new: ExecutionState,
        comment: str = "",
        *,
        expected: Iterable[ExecutionState] | None = None,
        version: int | None = None,
        **changes: Any,
    ) -> Execution:
        """Move an execution to `new`, checking the expected states and version atomically."""
        allowed = frozenset(expected) if expected is not None else None

        def q() -> Execution:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                row = self.db.execute("SELECT * FROM executions WHERE id = ?", (execution_id,)).fetchone()
                if row is None:
                    raise NotFound(execution_id)
                cur = _decode(row)
                if cur.state.is_terminal:
                    raise InvalidTransition(f"execution {execution_id} is already {cur.state.value}")
                if allowed is not None and cur.state not in allowed:
                    want = ", ".join(sorted(s.value for s in allowed))
                    raise InvalidTransition(f"execution {execution_id} is {cur.state.value}, expected {want}")
                if version is not None and cur.version != version:
                    raise InvalidTransition(f"execution {execution_id} changed (version {cur.version})")
                now = time.time()
                nxt = replace(cur, state=new, version=cur.version + 1, comment=comment, updated_at=now, **changes)
                self.db.execute(
                    "UPDATE executions SET state = ?, version = ?, record = ?, updated_at = ? WHERE id = ?",
                    (new.value, nxt.version, _encode(nxt), now, execution_id),
                )
                self.db.execute(
                    "INSERT INTO history VALUES (?, ?, ?, ?, ?)", (execution_id, cur.state.value, new.value, comment, now)
                )
                return nxt

        return await self._call(q)

    async def history(self, execution_id: str) -> list[Transition]:
        def q() -> list[Transition]:
            rows = self.db.execute(
                "SELECT * FROM history WHERE execution_id = ? ORDER BY rowid", (execution_id,)
            ).fetchall()
            return [
                Transition(ExecutionState(r["previous"]) if r["previous"] else None, ExecutionState(r["new"]),
                           r["comment"], r["time"])
                for r in rows
            ]  # fmt: skip

        return await self._call(q)

    async def counts(self) -> dict[ExecutionState, int]:
        rows = await self._call(
            lambda: self.db.execute("SELECT state, COUNT(*) AS n FROM executions GROUP BY state").fetchall()
        )
        return {ExecutionState(r["state"]): r["n"] for r in rows}

    # -- jobs -------------------------------------------------------------------------------
    async def put_job(self, job: JobRecord) -> JobRecord:
        now = time.time()
        job = replace(job, created_at=job.created_at or now, updated_at=now)
        await self._call(
            lambda: self.db.execute(
                "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (job.id, job.job_json, int(job.owned), job.client_id, int(job.cancelled), job.created_at, now),
            )
        )
        return job

    async def get_job(self, job_id: str) -> JobRecord:
        def q() -> JobRecord:
            row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise NotFound(job_id)
            return _job(row)

        return await self._call(q)

    async def list_jobs(self, client_id: str | None = None, limit: int = 1000) -> list[JobRecord]:
        sql, args = "SELECT * FROM jobs", []
        if client_id is not None:
            sql += " WHERE client_id = ?"
            args.append(client_id)
        sql += " ORDER BY created_at DESC LIMIT ?"
        args.append(limit)
        return await self._call(lambda: [_job(r) for r in self.db.execute(sql, args).fetchall()])

    # -- callbacks (persisted so a restart or a requester briefly down loses none) ---------
    async def add_callback(self, url: str, body: str) -> None:
        await self._call(
            lambda: self.db.execute(
                "INSERT INTO callbacks (url, body, attempts, next_at) VALUES (?, ?, 0, ?)", (url, body, time.time())
            )
        )

    async def due_callbacks(self, now: float, limit: int = 100) -> list[Callback]:
        def q() -> list[Callback]:
            rows = self.db.execute(
                "SELECT * FROM callbacks WHERE next_at <= ? ORDER BY id LIMIT ?", (now, limit)
            ).fetchall()
            return [Callback(r["id"], r["url"], r["body"], r["attempts"], r["next_at"]) for r in rows]

        return await self._call(q)

    async def next_callback_at(self) -> float | None:
        row = await self._call(lambda: self.db.execute("SELECT MIN(next_at) AS t FROM callbacks").fetchone())
        return row["t"]

    async def callback_done(self, callback_id: int) -> None:
        await self._call(lambda: self.db.execute("DELETE FROM callbacks WHERE id = ?", (callback_id,)))

    async def callback_retry(self, callback_id: int, next_at: float) -> None:
        await self._call(
            lambda: self.db.execute(
                "UPDATE callbacks SET attempts = attempts + 1, next_at = ? WHERE id = ?", (next_at, callback_id)
            )
        )


def _job(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=row["id"], job_json=row["job"], owned=bool(row["owned"]), client_id=row["client_id"],
        cancelled=bool(row["cancelled"]), created_at=row["created_at"], updated_at=row["updated_at"],
    )  # fmt: skip
