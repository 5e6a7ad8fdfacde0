"""Persistent store: executions with their history, owned jobs, pending callbacks (SQLite, WAL).

Every call runs on one dedicated thread so the loop never blocks and SQLite sees
one writer. Every transition is checked atomically against the lifecycle
(model/enums.py TRANSITIONS) and, when given, the execution's version; a
terminal execution is never updated.

The schema is the ordered list MIGRATIONS; meta's schema_version row records
how many are applied (the schema before MIGRATIONS wrote schema_version=1 too,
so those databases are adopted as version 1).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from computenode.errors import DependencyDown, InvalidTransition, NotFound, SchemaTooNew
from computenode.model import ExecutionState, ResourceUsageData, RunCommandResult, StorageSpec
from computenode.store.execution import Callback, Destination, Execution, JobRecord, Tombstone, Transition

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "InvalidTransition", "NotFound", "Store"]

T = TypeVar("T")

# MIGRATIONS[n - 1] takes the schema from version n - 1 to n, in one transaction.
# To change the schema, append a tuple of statements; never edit one already released.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the first schema
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE executions (
    id TEXT PRIMARY KEY, job_id TEXT NOT NULL, shard_index INTEGER NOT NULL,
    state TEXT NOT NULL, version INTEGER NOT NULL, record TEXT NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL)""",
        "CREATE INDEX executions_job ON executions (job_id, shard_index)",
        "CREATE INDEX executions_state ON executions (state)",
        """CREATE TABLE history (
    execution_id TEXT NOT NULL, previous TEXT, new TEXT NOT NULL, comment TEXT NOT NULL, time REAL NOT NULL)""",
        "CREATE INDEX history_execution ON history (execution_id)",
        """CREATE TABLE jobs (
    id TEXT PRIMARY KEY, job TEXT NOT NULL, owned INTEGER NOT NULL, client_id TEXT NOT NULL,
    cancelled INTEGER NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL)""",
        """CREATE TABLE callbacks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, url TEXT NOT NULL, body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL)""",
    ),
    # 2: a job's requester and spec hash, so a job ID names one job from one requester forever;
    # the digest of a signed submission, so sending it again names the same job
    (
        "ALTER TABLE jobs ADD COLUMN requester TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE jobs ADD COLUMN spec_hash TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE jobs ADD COLUMN submission TEXT NOT NULL DEFAULT ''",
        "CREATE UNIQUE INDEX jobs_submission ON jobs (client_id, submission) WHERE submission != ''",
    ),
    # 3: a callback names its destination (transport, address) and its name instead of one URL,
    # and each destination's queue is read in id order (callbacks.py delivers it first in, first
    # out). A version-2 URL is base + "/" + name: rtrim by its non-slash characters leaves the
    # base with its last slash.
    (
        """CREATE TABLE callbacks_v3 (
    id INTEGER PRIMARY KEY AUTOINCREMENT, transport TEXT NOT NULL, address TEXT NOT NULL,
    name TEXT NOT NULL, body TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL)""",
        """INSERT INTO callbacks_v3 (id, transport, address, name, body, attempts, next_at)
    SELECT id, 'http', substr(base, 1, length(base) - 1), substr(url, length(base) + 1), body, attempts, next_at
    FROM (SELECT *, rtrim(url, replace(url, '/', '')) AS base FROM callbacks)""",
        "DROP TABLE callbacks",
        "ALTER TABLE callbacks_v3 RENAME TO callbacks",
        "CREATE INDEX callbacks_queue ON callbacks (transport, address, id)",
    ),
    # 4: retention (cleanup.py). Files and rows are found by their stored timestamps through
    # indexes; a deleted job leaves a tombstone, and the triggers keep its ID and its signed
    # submission from ever naming a new job, or a new execution joining it, whichever code
    # path inserts.
    (
        "CREATE INDEX executions_updated ON executions (updated_at, id)",
        "CREATE INDEX jobs_updated ON jobs (updated_at, id)",
        """CREATE TABLE job_tombstones (
    id TEXT PRIMARY KEY, owned INTEGER NOT NULL, client_id TEXT NOT NULL, requester TEXT NOT NULL,
    spec_hash TEXT NOT NULL, submission TEXT NOT NULL, created_at REAL NOT NULL, deleted_at REAL NOT NULL)""",
        "CREATE UNIQUE INDEX job_tombstones_submission ON job_tombstones (client_id, submission)"
        " WHERE submission != ''",
        """CREATE TRIGGER jobs_not_tombstoned BEFORE INSERT ON jobs
    WHEN EXISTS (SELECT 1 FROM job_tombstones WHERE id = NEW.id)
        OR (NEW.submission != '' AND EXISTS (SELECT 1 FROM job_tombstones
            WHERE client_id = NEW.client_id AND submission = NEW.submission AND submission != ''))
    BEGIN SELECT RAISE(ABORT, 'job tombstoned'); END""",
        """CREATE TRIGGER executions_not_tombstoned BEFORE INSERT ON executions
    WHEN EXISTS (SELECT 1 FROM job_tombstones WHERE id = NEW.job_id)
    BEGIN SELECT RAISE(ABORT, 'job tombstoned'); END""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

# SQLite's primary result codes that mean the database file or its disk is unusable,
# not that the query is wrong: the store is down (errors.DependencyDown).
_DOWN_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_NOTADB,
    }
)


def schema_version(db: sqlite3.Connection) -> int:
    """How many MIGRATIONS `db` has applied (0 for an empty database)."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is None:
        return 0
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Apply the MIGRATIONS `db` lacks, one transaction each; refuse a newer database."""
    while True:
        with db:
            # The version is read inside the write lock, so two processes never apply one twice.
            db.execute("BEGIN IMMEDIATE")
            found, known = schema_version(db), len(MIGRATIONS)
            if found > known:
                raise SchemaTooNew(str(path), found, known)
            if found == known:
                return
            for statement in MIGRATIONS[found]:
                db.execute(statement)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(found + 1),))


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
    def __init__(self, path: Path, on_full: Callable[[], bool] | None = None) -> None:
        """`on_full()` frees some disk when a write finds it full (True: try the write again)."""
        self.path = path
        self.on_full = on_full
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._db: sqlite3.Connection | None = None

    # -- plumbing ---------------------------------------------------------------------------
    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, fn, args)

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        """fn(*args) on the store thread; a full disk gets one more try once on_full freed room
        (every call is one statement or one transaction, rolled back when it fails)."""
        try:
            try:
                return fn(*args)
            except sqlite3.Error as exc:
                full = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == sqlite3.SQLITE_FULL
                if not full or self.on_full is None or not self.on_full():
                    raise
                return fn(*args)
        except sqlite3.Error as exc:
            # Only errors from the SQLite library carry a code; the sqlite3 module's own checks
            # (a closed connection: ProgrammingError) do not. Extended codes keep the primary
            # one in the low byte.
            code: int | None = getattr(exc, "sqlite_errorcode", None)
            if code is not None and code & 0xFF in _DOWN_CODES:
                raise DependencyDown("store", f"{self.path}: {exc}") from exc
            raise

    async def open(self) -> None:
        await self._call(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        os.chmod(self.path, 0o600)  # job specs and results: the node's alone (WAL files copy this mode)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        try:
            migrate(db, self.path)
        except BaseException:
            db.close()
            raise
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
        except (DependencyDown, sqlite3.Error, RuntimeError, OSError) as exc:
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

    async def executions(
        self, state: ExecutionState | None = None, job_id: str | None = None, limit: int = 1000
    ) -> list[Execution]:
        """The newest executions first, optionally only those in `state` or of `job_id`."""
        sql = "SELECT * FROM executions WHERE 1=1"
        args: list[object] = []
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
        version: int | None = None,
        **changes: Any,
    ) -> Execution:
        """Move an execution to `new` if TRANSITIONS allows it from its current state and, when
        `version` is given, the execution is still at that version; atomically, with its history."""

        def q() -> Execution:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                row = self.db.execute("SELECT * FROM executions WHERE id = ?", (execution_id,)).fetchone()
                if row is None:
                    raise NotFound(execution_id)
                cur = _decode(row)
                if version is not None and cur.version != version:
                    why = f"it changed meanwhile (version {cur.version}, not {version})"
                    raise InvalidTransition(execution_id, cur.state, new, why)
                if not cur.state.may_move_to(new):
                    why = (
                        "it has already ended" if cur.state.is_terminal else "the lifecycle does not allow it"
                    )
                    raise InvalidTransition(execution_id, cur.state, new, why)
                now = time.time()
                nxt = replace(
                    cur, state=new, version=cur.version + 1, comment=comment, updated_at=now, **changes
                )
                self.db.execute(
                    "UPDATE executions SET state = ?, version = ?, record = ?, updated_at = ? WHERE id = ?",
                    (new.value, nxt.version, _encode(nxt), now, execution_id),
                )
                self.db.execute(
                    "INSERT INTO history VALUES (?, ?, ?, ?, ?)",
                    (execution_id, cur.state.value, new.value, comment, now),
                )
                return nxt

        return await self._call(q)

    async def history(self, execution_id: str) -> list[Transition]:
        def q() -> list[Transition]:
            rows = self.db.execute(
                "SELECT * FROM history WHERE execution_id = ? ORDER BY rowid", (execution_id,)
            ).fetchall()
            return [_transition(r) for r in rows]

        return await self._call(q)

    async def counts(self) -> dict[ExecutionState, int]:
        rows = await self._call(
            lambda: self.db.execute("SELECT state, COUNT(*) AS n FROM executions GROUP BY state").fetchall()
        )
        return {ExecutionState(r["state"]): r["n"] for r in rows}

    # -- jobs -------------------------------------------------------------------------------
    async def put_job(self, job: JobRecord) -> JobRecord:
        """Store the job (a new one, or `job` replacing the record of the same ID)."""
        now = time.time()
        job = replace(job, created_at=job.created_at or now, updated_at=now)
        await self._call(lambda: self.db.execute(_PUT_JOB.format(verb="INSERT OR REPLACE"), _job_row(job)))
        return job

    async def claim_job(self, job: JobRecord) -> JobRecord:
        """Store `job` unless its ID (or its client's signed submission) is taken; the stored
        record either way: compare it with `job` to see which.

        One statement, so two offers racing for one ID cannot both win.
        """
        now = time.time()
        job = replace(job, created_at=job.created_at or now, updated_at=now)

        def q() -> JobRecord:
            self.db.execute(_PUT_JOB.format(verb="INSERT OR IGNORE"), _job_row(job))
            row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (job.id,)).fetchone()
            if row is None:  # the same signed submission was stored first, under its own ID
                row = self.db.execute(_BY_SUBMISSION, (job.client_id, job.submission)).fetchone()
            return _job(row)

        return await self._call(q)

    async def find_submission(self, client_id: str, submission: str) -> JobRecord | None:
        """The job a client's signed submission (its digest) made, if any."""
        row = await self._call(lambda: self.db.execute(_BY_SUBMISSION, (client_id, submission)).fetchone())
        return _job(row) if row is not None else None

    async def find_job(self, job_id: str) -> JobRecord | None:
        row = await self._call(
            lambda: self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        )
        return _job(row) if row is not None else None

    async def cancel_job(self, job_id: str) -> None:
        """Mark the job cancelled: none of its executions is started or retried again."""
        sql = "UPDATE jobs SET cancelled = 1, updated_at = ? WHERE id = ?"
        await self._call(lambda: self.db.execute(sql, (time.time(), job_id)))

    async def get_job(self, job_id: str) -> JobRecord:
        def q() -> JobRecord:
            row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise NotFound(job_id)
            return _job(row)

        return await self._call(q)

    async def jobs(self, client_id: str | None = None, limit: int = 1000) -> list[JobRecord]:
        """The newest jobs first, optionally only `client_id`'s."""
        sql = "SELECT * FROM jobs"
        args: list[object] = []
        if client_id is not None:
            sql += " WHERE client_id = ?"
            args.append(client_id)
        sql += " ORDER BY created_at DESC LIMIT ?"
        args.append(limit)
        return await self._call(lambda: [_job(r) for r in self.db.execute(sql, args).fetchall()])

    # -- callbacks (persisted so a restart or a requester briefly down loses none) ---------
    # A destination's queue is its rows in id order; its head (the lowest id) is the only one
    # callbacks.py delivers, and the head's attempts and next_at are the destination's backoff.
    async def add_callback(self, destination: Destination, name: str, body: str) -> int:
        """Append a callback to `destination`'s queue; its id."""

        def q() -> int:
            cur = self.db.execute(
                "INSERT INTO callbacks (transport, address, name, body, attempts, next_at)"
                " VALUES (?, ?, ?, ?, 0, ?)",
                (destination.transport, destination.address, name, body, time.time()),
            )
            if cur.lastrowid is None:  # an INSERT into a rowid table always sets it
                raise RuntimeError("no id for the stored callback")
            return cur.lastrowid

        return await self._call(q)

    async def callback_head(self, destination: Destination) -> Callback | None:
        """The oldest callback still queued for `destination`."""
        row = await self._call(
            lambda: self.db.execute(
                "SELECT * FROM callbacks WHERE transport = ? AND address = ? ORDER BY id LIMIT 1",
                (destination.transport, destination.address),
            ).fetchone()
        )
        return _callback(row) if row is not None else None

    async def callback_heads(self, due_by: float | None = None, limit: int = 1000) -> list[Callback]:
        """The head of every destination's queue, oldest first; only those due by `due_by` if given."""
        sql = _HEADS + (" WHERE c.next_at <= ?" if due_by is not None else "") + " ORDER BY c.id LIMIT ?"
        args: tuple[float | int, ...] = (due_by, limit) if due_by is not None else (limit,)
        return await self._call(lambda: [_callback(r) for r in self.db.execute(sql, args).fetchall()])

    async def callbacks(self, limit: int = 1000) -> list[Callback]:
        """Every queued callback, oldest first."""
        sql = "SELECT * FROM callbacks ORDER BY id LIMIT ?"
        return await self._call(lambda: [_callback(r) for r in self.db.execute(sql, (limit,)).fetchall()])

    async def count_callbacks(self) -> int:
        row = await self._call(lambda: self.db.execute("SELECT COUNT(*) AS n FROM callbacks").fetchone())
        return int(row["n"])

    async def callback_done(self, callback_id: int) -> None:
        await self._call(lambda: self.db.execute("DELETE FROM callbacks WHERE id = ?", (callback_id,)))

    async def callback_retry(self, callback_id: int, next_at: float) -> None:
        await self._call(
            lambda: self.db.execute(
                "UPDATE callbacks SET attempts = attempts + 1, next_at = ? WHERE id = ?",
                (next_at, callback_id),
            )
        )

    # -- retention (cleanup.py) -----------------------------------------------------------------
    async def ended_after(
        self, after: tuple[float, str], until: float, limit: int
    ) -> list[tuple[float, str]]:
        """(updated_at, id) of terminal executions past the cursor `after` and ended by `until`, in
        that order, read from the index executions_updated. A terminal execution is never updated
        again, so a cursor kept over this order meets each one once."""
        sql = f"""SELECT updated_at, id FROM executions INDEXED BY executions_updated
            WHERE updated_at >= ? AND updated_at <= ? AND (updated_at > ? OR id > ?)
            AND state IN ({_TERMINAL_MARKS}) ORDER BY updated_at, id LIMIT ?"""
        args = (after[0], until, after[0], after[1], *_TERMINAL, limit)
        rows = await self._call(lambda: self.db.execute(sql, args).fetchall())
        return [(r[0], r[1]) for r in rows]

    async def expired_jobs(
        self, before: float, after: tuple[float, str], limit: int
    ) -> tuple[dict[str, list[str]], tuple[float, str] | None]:
        """Jobs changed last before `before` whose every execution ended before it too, each with
        its executions' IDs: from the cursor `after` (jobs' updated_at, id), about `limit`
        executions' worth, at most `limit` jobs looked at. The cursor to go on from (None at the
        end). A job held back by a live or recent execution is passed over, not waited for."""

        def q() -> tuple[dict[str, list[str]], tuple[float, str] | None]:
            rows = self.db.execute(_JOBS_AFTER, (after[0], before, after[0], after[1], limit)).fetchall()
            found: dict[str, list[str]] = {}
            executions = 0
            for i, row in enumerate(rows):
                if self.db.execute(_HELD_BACK, (row["id"], *_TERMINAL, before)).fetchone() is None:
                    ids = [r[0] for r in self.db.execute(_JOB_EXECUTIONS, (row["id"],)).fetchall()]
                    found[row["id"]] = ids
                    executions += len(ids)
                if executions >= limit or i == len(rows) - 1:
                    done = executions < limit and len(rows) < limit
                    return found, None if done else (row["updated_at"], row["id"])
            return found, None

        return await self._call(q)

    async def delete_jobs(self, job_ids: list[str], before: float) -> tuple[list[str], int]:
        """Delete each job with its executions and their history, leaving a tombstone, if it still
        qualifies (expired_jobs' test, checked again in the transaction: an offer may have bid on
        it since); one transaction. The jobs deleted and how many executions went with them."""

        def q() -> tuple[list[str], int]:
            deleted: list[str] = []
            executions = 0
            now = time.time()
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                for job_id in job_ids:
                    if self.db.execute(_HELD_BACK, (job_id, *_TERMINAL, before)).fetchone() is not None:
                        continue
                    self.db.execute(_TOMBSTONE, (now, job_id))
                    self.db.execute(
                        "DELETE FROM history WHERE execution_id IN (SELECT id FROM executions WHERE job_id = ?)",
                        (job_id,),
                    )
                    executions += self.db.execute(
                        "DELETE FROM executions WHERE job_id = ?", (job_id,)
                    ).rowcount
                    self.db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
                    deleted.append(job_id)
            return deleted, executions

        return await self._call(q)

    async def known_executions(self, execution_ids: list[str]) -> set[str]:
        """Which of `execution_ids` the store has."""
        sql = f"SELECT id FROM executions WHERE id IN ({','.join('?' * len(execution_ids))})"
        return await self._call(lambda: {r[0] for r in self.db.execute(sql, execution_ids).fetchall()})

    async def find_job_or_tombstone(self, job_id: str) -> JobRecord | Tombstone | None:
        """The job by that ID, else the tombstone it left when it was deleted; one store call."""

        def q() -> JobRecord | Tombstone | None:
            row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is not None:
                return _job(row)
            row = self.db.execute("SELECT * FROM job_tombstones WHERE id = ?", (job_id,)).fetchone()
            return _tombstone(row) if row is not None else None

        return await self._call(q)

    async def find_submission_or_tombstone(
        self, client_id: str, submission: str
    ) -> JobRecord | Tombstone | None:
        """The job a client's signed submission made, else the tombstone that job left; one store call."""

        def q() -> JobRecord | Tombstone | None:
            row = self.db.execute(_BY_SUBMISSION, (client_id, submission)).fetchone()
            if row is not None:
                return _job(row)
            row = self.db.execute(_TOMBSTONE_BY_SUBMISSION, (client_id, submission)).fetchone()
            return _tombstone(row) if row is not None else None

        return await self._call(q)


_TERMINAL = tuple(s.value for s in ExecutionState if s.is_terminal)
_TERMINAL_MARKS = ",".join("?" * len(_TERMINAL))
_JOBS_AFTER = """SELECT id, updated_at FROM jobs INDEXED BY jobs_updated
    WHERE updated_at >= ? AND updated_at < ? AND (updated_at > ? OR id > ?) ORDER BY updated_at, id LIMIT ?"""
# A job is kept while one of its executions is live or ended at `before` or later.
_HELD_BACK = f"""SELECT 1 FROM executions WHERE job_id = ?
    AND (state NOT IN ({_TERMINAL_MARKS}) OR updated_at >= ?) LIMIT 1"""
_JOB_EXECUTIONS = "SELECT id FROM executions WHERE job_id = ?"
_TOMBSTONE = """INSERT INTO job_tombstones
    SELECT id, owned, client_id, requester, spec_hash, submission, created_at, ? FROM jobs WHERE id = ?"""
_TOMBSTONE_BY_SUBMISSION = (
    "SELECT * FROM job_tombstones WHERE client_id = ? AND submission = ? AND submission != ''"
)


def _tombstone(row: sqlite3.Row) -> Tombstone:
    return Tombstone(
        id=row["id"],
        owned=bool(row["owned"]),
        client_id=row["client_id"],
        requester=row["requester"],
        spec_hash=row["spec_hash"],
        submission=row["submission"],
        created_at=row["created_at"],
        deleted_at=row["deleted_at"],
    )


# The lowest id per destination, read from the index callbacks_queue alone.
_HEADS = """SELECT c.* FROM callbacks AS c
    JOIN (SELECT MIN(id) AS id FROM callbacks GROUP BY transport, address) AS h ON c.id = h.id"""


def _callback(row: sqlite3.Row) -> Callback:
    return Callback(
        id=row["id"],
        destination=Destination(row["transport"], row["address"]),
        name=row["name"],
        body=row["body"],
        attempts=row["attempts"],
        next_at=row["next_at"],
    )


def _transition(row: sqlite3.Row) -> Transition:
    previous = ExecutionState(row["previous"]) if row["previous"] else None
    return Transition(previous, ExecutionState(row["new"]), row["comment"], row["time"])


_PUT_JOB = """{verb} INTO jobs
    (id, job, owned, client_id, cancelled, created_at, updated_at, requester, spec_hash, submission)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_BY_SUBMISSION = "SELECT * FROM jobs WHERE client_id = ? AND submission = ? AND submission != ''"


def _job_row(job: JobRecord) -> tuple[object, ...]:
    return (
        *(job.id, job.job_json, int(job.owned), job.client_id, int(job.cancelled)),
        *(job.created_at, job.updated_at, job.requester, job.spec_hash, job.submission),
    )


def _job(row: sqlite3.Row) -> JobRecord:
    return JobRecord(
        id=row["id"],
        job_json=row["job"],
        owned=bool(row["owned"]),
        client_id=row["client_id"],
        requester=row["requester"],
        spec_hash=row["spec_hash"],
        submission=row["submission"],
        cancelled=bool(row["cancelled"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )
