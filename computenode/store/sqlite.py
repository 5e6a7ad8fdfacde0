"""Persistent store: executions with their history, owned jobs, pending callbacks (SQLite, WAL).

Every call runs on one dedicated thread so the loop never blocks and SQLite sees
one writer. Every transition is checked atomically against the lifecycle
(model/enums.py TRANSITIONS) and, when given, the execution's version; a
terminal execution is never updated.

The schema is the ordered list of store/migrations.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from computenode.errors import DependencyDown, InvalidTransition, NotFound
from computenode.model import ExecutionState, JobState, ResourceUsageData, RunCommandResult, StorageSpec
from computenode.store.execution import (
    Callback,
    ClientJobQuery,
    Destination,
    Execution,
    JobRecord,
    JobSummary,
    Page,
    Position,
    Tombstone,
    Transition,
)
from computenode.store.migrations import JOB_STATE_SQL, MIGRATIONS, SCHEMA_VERSION, migrate, schema_version

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "InvalidTransition",
    "NotFound",
    "Store",
    "migrate",
    "schema_version",
]

T = TypeVar("T")
# One transition of a multi-step write: the new state, its comment, fields changed with it.
Step = tuple[ExecutionState, str, Mapping[str, Any]]


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


def _down(exc: sqlite3.Error, path: Path) -> DependencyDown | None:
    """DependencyDown when `exc` means the database file or its disk is unusable, else None.

    Only errors from the SQLite library carry a code; the sqlite3 module's own checks (a closed
    connection: ProgrammingError) do not. Extended codes keep the primary one in the low byte.
    """
    code: int | None = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _DOWN_CODES:
        return DependencyDown("store", f"{path}: {exc}")
    return None


class _Write:
    """A write queued for the store thread, and the future its caller awaits."""

    __slots__ = ("fn", "args", "future")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], future: asyncio.Future[Any]) -> None:
        self.fn = fn
        self.args = args
        self.future = future


def _deliver(batch: list[_Write], outcomes: list[tuple[bool, Any]]) -> None:
    """Hand each write's outcome to its caller: one wake-up of each loop per batch."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
    for w, (ok, value) in zip(batch, outcomes, strict=True):
        by_loop.setdefault(w.future.get_loop(), []).append((w.future, ok, value))
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, items)
        except RuntimeError:  # that loop is closed: nobody awaits these any more
            pass


def _settle(items: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in items:
        if future.cancelled():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


class Store:
    def __init__(self, path: Path, on_full: Callable[[], bool] | None = None, readers: int = 2) -> None:
        """`on_full()` frees some disk when a write finds it full (True: try the write again);
        `readers`: threads with a read-only connection each, so reads never queue behind writes."""
        self.path = path
        self.on_full = on_full
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._read_pool = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="store-read")
        self._db: sqlite3.Connection | None = None
        self._local = threading.local()  # each read thread's own connection
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        # Group commit: writes queue here; the store thread takes all that are queued and runs
        # them in one transaction (_write_batch), so concurrent writers share a commit.
        self._queue: list[_Write] = []
        self._queue_lock = threading.Lock()
        self._draining = False  # a _drain is queued or running on the store thread
        self.commits = 0  # write transactions committed (tests see writers sharing them)

    # -- plumbing ---------------------------------------------------------------------------
    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) on the store thread inside a write transaction, possibly shared with other
        calls queued meanwhile; returns (or raises) once that transaction is committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        with self._queue_lock:
            self._queue.append(_Write(fn, args, future))
            start, self._draining = not self._draining, True
        if start:
            try:
                self._pool.submit(self._drain)
            except RuntimeError:  # closed: the write is dropped, and so is the claim to drain
                with self._queue_lock:
                    self._queue.clear()
                    self._draining = False
                raise
        return await future

    async def _alone(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) on the store thread, outside any transaction (open, close)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, fn, args)

    def _drain(self) -> None:
        """On the store thread: commit the queued writes, batch after batch, until none is left."""
        while True:
            with self._queue_lock:
                batch, self._queue = self._queue, []
                if not batch:
                    self._draining = False
                    return
            try:
                outcomes = self._write_batch(batch) if len(batch) > 1 else [self._write_one(batch[0])]
            except BaseException as exc:  # not an outcome of one write: every caller of the batch sees it
                outcomes = [(False, exc)] * len(batch)
            _deliver(batch, outcomes)

    def _write_one(self, w: _Write) -> tuple[bool, Any]:
        try:
            return True, self._run(self._in_transaction, (w.fn, w.args))
        except Exception as exc:
            return False, exc

    def _in_transaction(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            value = fn(*args)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self.commits += 1
        return value

    def _write_batch(self, batch: list[_Write]) -> list[tuple[bool, Any]]:
        """Every write of `batch` in one transaction, each in its own savepoint: a write that raises
        is undone alone and its caller gets the error. When the store itself fails (a full disk,
        the file unusable: an SQLite error other than a constraint or a lifecycle check), the batch
        is rolled back and each write runs alone (_write_one), with its own error and retry."""
        db = self.db
        outcomes: list[tuple[bool, Any]] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            for w in batch:
                db.execute("SAVEPOINT write")
                try:
                    value = w.fn(*w.args)
                except (sqlite3.IntegrityError, sqlite3.ProgrammingError, NotFound, InvalidTransition) as exc:
                    db.execute("ROLLBACK TO write")
                    db.execute("RELEASE write")
                    outcomes.append((False, exc))
                else:
                    db.execute("RELEASE write")
                    outcomes.append((True, value))
            db.execute("COMMIT")
        except Exception:
            if db.in_transaction:
                db.execute("ROLLBACK")
            return [self._write_one(w) for w in batch]
        self.commits += 1
        return outcomes

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(db, *args) on a read thread, `db` that thread's read-only connection."""
        return await asyncio.get_running_loop().run_in_executor(self._read_pool, self._run_read, fn, args)

    def _run_read(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            return fn(self._reader(), *args)
        except sqlite3.Error as exc:
            down = _down(exc, self.path)
            if down is None:
                raise
            raise down from exc

    def _reader(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            if self._db is None:
                raise RuntimeError("store is not open")
            uri = self.path.absolute().as_uri() + "?mode=ro"
            db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA busy_timeout=5000")
            with self._readers_lock:
                self._readers.append(db)
            self._local.db = db
        return db

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
            down = _down(exc, self.path)
            if down is None:
                raise
            raise down from exc

    async def open(self) -> None:
        await self._alone(self._open)

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
        self._read_pool.shutdown(wait=True)
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for reader in readers:
            reader.close()
        if self._db is not None:
            await self._alone(self._db.close)
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
        def q(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return row["value"] if row else None

        return await self._read(q)

    async def set_meta(self, key: str, value: str) -> None:
        await self._call(lambda: self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value)))

    # -- executions -------------------------------------------------------------------------
    async def create(self, ex: Execution, comment: str = "", then: Sequence[Step] = ()) -> Execution:
        """Store a new execution; with `then`, also move it through those steps in the same
        transaction, each checked and in its history as moves() does. The execution as stored last."""
        return (await self.create_moved(ex, comment, then))[-1]

    async def create_moved(
        self, ex: Execution, comment: str = "", then: Sequence[Step] = ()
    ) -> list[Execution]:
        """create(), returning the execution as created and after each step of `then`."""
        return await self._call(self._insert, ex, comment, then)

    def _insert(self, ex: Execution, comment: str, then: Sequence[Step]) -> list[Execution]:
        """create_moved() on the store thread, inside the caller's transaction."""
        now = time.time()
        ex = replace(ex, created_at=now, updated_at=now, comment=comment)
        self.db.execute(
            "INSERT INTO executions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (ex.id, ex.job_id, ex.shard_index, ex.state.value, ex.version, _encode(ex), now, now),
        )
        self.db.execute(
            "INSERT INTO history VALUES (?, NULL, ?, ?, ?)", (ex.id, ex.state.value, comment, now)
        )
        done = [ex, *self._steps(ex, then, None)]
        self.db.execute(_job_state_sql(done[-1].state), (ex.job_id,))
        return done

    async def get(self, execution_id: str) -> Execution:
        def q(db: sqlite3.Connection) -> Execution:
            row = db.execute("SELECT * FROM executions WHERE id = ?", (execution_id,)).fetchone()
            if row is None:
                raise NotFound(execution_id)
            return _decode(row)

        return await self._read(q)

    async def executions(
        self, state: ExecutionState | None = None, job_id: str | None = None, limit: int = 1000
    ) -> list[Execution]:
        """The newest executions first, optionally only those in `state` or of `job_id`."""
        return (await self.execution_page(state, job_id, limit)).items

    async def execution_page(
        self,
        state: ExecutionState | None = None,
        job_id: str | None = None,
        limit: int = 100,
        after: Position | None = None,
    ) -> Page[Execution]:
        """Up to `limit` executions, newest first (by created_at, then id), from below `after`."""
        where, args = _page_where(after)
        if state is not None:
            where.append("state = ?")
            args.append(state.value)
        if job_id is not None:
            where.append("job_id = ?")
            args.append(job_id)
        sql = (
            f"SELECT * FROM executions WHERE {' AND '.join(where)} ORDER BY created_at DESC, id DESC LIMIT ?"
        )

        def q(db: sqlite3.Connection) -> Page[Execution]:
            rows = db.execute(sql, (*args, limit + 1)).fetchall()
            return _page([_decode(r) for r in rows[:limit]], len(rows) > limit, _execution_position)

        return await self._read(q)

    async def active(self, limit: int = -1) -> list[Execution]:
        """Executions not in a terminal state, oldest first; all of them unless `limit`."""
        active = tuple(s.value for s in ExecutionState if not s.is_terminal)
        # IN over the indexed states, not NOT IN: an index lookup per state, not a table scan.
        sql = f"SELECT * FROM executions WHERE state IN ({','.join('?' * len(active))}) ORDER BY created_at LIMIT ?"
        return await self._read(lambda db: [_decode(r) for r in db.execute(sql, (*active, limit)).fetchall()])

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
        `version` is given, the execution is still at that version; atomically, with its history
        and its job's state."""
        return (await self.move(execution_id, new, comment, version=version, **changes))[0]

    async def move(
        self,
        execution_id: str,
        new: ExecutionState,
        comment: str = "",
        *,
        version: int | None = None,
        **changes: Any,
    ) -> tuple[Execution, JobState]:
        """transition(), with the job's state as that same transaction stored it (no second read)."""
        done, job_state = await self.moves(execution_id, [(new, comment, changes)], version=version)
        return done[-1], job_state

    async def moves(
        self, execution_id: str, steps: Sequence[Step], *, version: int | None = None
    ) -> tuple[list[Execution], JobState]:
        """Several transitions of one execution in one transaction (when nothing is to be done
        between them), each checked and in its history as transition() does; `version` is checked
        before the first. The execution after each step, and the job's state as stored."""

        def q() -> tuple[list[Execution], JobState]:
            row = self.db.execute("SELECT * FROM executions WHERE id = ?", (execution_id,)).fetchone()
            if row is None:
                raise NotFound(execution_id)
            cur = _decode(row)
            done = self._steps(cur, steps, version)
            row = self.db.execute(
                _job_state_sql(done[-1].state) + " RETURNING state", (cur.job_id,)
            ).fetchone()
            # An execution of a job the store lacks (tests store bare executions): state unknown.
            return done, JobState(row["state"]) if row is not None else JobState.NEW

        return await self._call(q)

    def _steps(self, cur: Execution, steps: Sequence[Step], version: int | None) -> list[Execution]:
        """Apply `steps` to `cur` (stored), each checked and written with its history row; on the
        store thread, inside the caller's transaction."""
        done: list[Execution] = []
        for new, comment, changes in steps:
            _check_move(cur, new, version if not done else None)
            now = time.time()
            nxt = replace(cur, state=new, version=cur.version + 1, comment=comment, updated_at=now, **changes)
            self.db.execute(
                "INSERT INTO history VALUES (?, ?, ?, ?, ?)",
                (cur.id, cur.state.value, new.value, comment, now),
            )
            done.append(nxt)
            cur = nxt
        if done:
            self.db.execute(
                "UPDATE executions SET state = ?, version = ?, record = ?, updated_at = ? WHERE id = ?",
                (cur.state.value, cur.version, _encode(cur), cur.updated_at, cur.id),
            )
        return done

    async def history(self, execution_id: str) -> list[Transition]:
        def q(db: sqlite3.Connection) -> list[Transition]:
            rows = db.execute(
                "SELECT * FROM history WHERE execution_id = ? ORDER BY rowid", (execution_id,)
            ).fetchall()
            return [_transition(r) for r in rows]

        return await self._read(q)

    async def counts(self) -> dict[ExecutionState, int]:
        rows = await self._read(
            lambda db: db.execute("SELECT state, COUNT(*) AS n FROM executions GROUP BY state").fetchall()
        )
        return {ExecutionState(r["state"]): r["n"] for r in rows}

    # -- jobs -------------------------------------------------------------------------------
    async def put_job(self, job: JobRecord) -> JobRecord:
        """Store the job (a new one, or `job` replacing the record of the same ID)."""
        now = time.time()
        job = replace(job, created_at=job.created_at or now, updated_at=now)

        def q() -> JobRecord:
            self.db.execute(_PUT_JOB.format(verb="INSERT OR REPLACE"), _job_row(job))
            return _store_job_extras(self.db, job)

        return await self._call(q)

    async def claim_job(self, job: JobRecord) -> JobRecord:
        """Store `job` unless its ID (or its client's signed submission) is taken; the stored
        record either way: compare it with `job` to see which.

        One transaction, so two offers racing for one ID cannot both win.
        """
        return (await self.claim_job_with(job, ()))[0]

    async def claim_job_with(
        self, job: JobRecord, executions: Sequence[tuple[Execution, str, Sequence[Step]]]
    ) -> tuple[JobRecord, list[list[Execution]]]:
        """claim_job(), and when `job` is the one stored, its `executions` made in the same
        transaction as create_moved() makes each; none when the ID or submission was taken."""
        now = time.time()
        job = replace(job, created_at=job.created_at or now, updated_at=now)

        def q() -> tuple[JobRecord, list[list[Execution]]]:
            if self.db.execute(_PUT_JOB.format(verb="INSERT OR IGNORE"), _job_row(job)).rowcount:
                stored = _store_job_extras(self.db, job)
                made = [self._insert(ex, comment, then) for ex, comment, then in executions]
                if made:  # its state with them (_store_job_extras set it before they existed)
                    row = self.db.execute("SELECT state FROM jobs WHERE id = ?", (job.id,)).fetchone()
                    stored = replace(stored, state=JobState(row["state"]))
                return stored, made
            row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (job.id,)).fetchone()
            if row is None:  # the same signed submission was stored first, under its own ID
                row = self.db.execute(_BY_SUBMISSION, (job.client_id, job.submission)).fetchone()
            return _job(row), []

        return await self._call(q)

    async def find_submission(self, client_id: str, submission: str) -> JobRecord | None:
        """The job a client's signed submission (its digest) made, if any."""
        row = await self._read(lambda db: db.execute(_BY_SUBMISSION, (client_id, submission)).fetchone())
        return _job(row) if row is not None else None

    async def find_job(self, job_id: str) -> JobRecord | None:
        row = await self._read(lambda db: db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())
        return _job(row) if row is not None else None

    async def job_ids_with_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        """Up to `limit` job IDs starting with `prefix`, in ID order: a range over the primary key's
        index, so resolving a prefix costs the same with ten jobs or a million."""
        sql = "SELECT id FROM jobs WHERE id >= ? AND id < ? ORDER BY id LIMIT ?"
        rows = await self._read(lambda db: db.execute(sql, (prefix, prefix + _TOP, limit)).fetchall())
        return [row["id"] for row in rows]

    async def job_with_executions(self, job_id: str, limit: int = 1000) -> tuple[JobRecord, list[Execution]]:
        """The job (NotFound if none) and its executions, newest first: one read, one thread hop."""
        sql = "SELECT * FROM executions WHERE job_id = ? ORDER BY created_at DESC, id DESC LIMIT ?"

        def q(db: sqlite3.Connection) -> tuple[JobRecord, list[Execution]]:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise NotFound(job_id)
            return _job(row), [_decode(r) for r in db.execute(sql, (job_id, limit)).fetchall()]

        return await self._read(q)

    async def find_client_job(self, client_id: str, job_id: str, prefix_len: int) -> JobRecord | None:
        """`client_id`'s job `job_id`, or else its newest job whose ID starts with `job_id` when
        that is `prefix_len` characters long (v0.3's short IDs); from the indexes alone."""
        sql = (
            "SELECT * FROM jobs WHERE client_id = ? AND (id = ? OR (? AND id >= ? AND id < ?))"
            " ORDER BY id = ? DESC, created_at DESC LIMIT 1"
        )
        args = (client_id, job_id, len(job_id) == prefix_len, job_id, job_id + _TOP, job_id)
        row = await self._read(lambda db: db.execute(sql, args).fetchone())
        return _job(row) if row is not None else None

    async def cancel_job(self, job_id: str) -> None:
        """Mark the job cancelled: none of its executions is started or retried again."""

        def q() -> None:
            self.db.execute(
                "UPDATE jobs SET cancelled = 1, updated_at = ? WHERE id = ?", (time.time(), job_id)
            )
            self.db.execute(_SET_JOB_STATE, (job_id,))

        await self._call(q)

    async def get_job(self, job_id: str) -> JobRecord:
        rec = await self.find_job(job_id)
        if rec is None:
            raise NotFound(job_id)
        return rec

    async def jobs(self, client_id: str | None = None, limit: int = 1000) -> list[JobRecord]:
        """The newest jobs first, optionally only `client_id`'s."""
        return [s.record for s in (await self.job_page(client_id=client_id, limit=limit)).items]

    async def job_page(
        self,
        state: JobState | None = None,
        label: str | None = None,
        since: float | None = None,
        limit: int = 100,
        after: Position | None = None,
        client_id: str | None = None,
    ) -> Page[JobSummary]:
        """Up to `limit` jobs, newest first (by created_at, then id), from below `after`; only
        those in `state`, annotated `label`, created at or after `since`, of `client_id`."""
        where, args = _page_where(after)
        if state is not None:
            where.append("state = ?")
            args.append(state.value)
        if label is not None:  # rows of job_labels_label, in the page's order
            where.append("id IN (SELECT job_id FROM job_labels WHERE label = ?)")
            args.append(label)
        if since is not None:
            where.append("created_at >= ?")
            args.append(since)
        if client_id is not None:
            where.append("client_id = ?")
            args.append(client_id)
        sql = f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY created_at DESC, id DESC LIMIT ?"

        def q(db: sqlite3.Connection) -> Page[JobSummary]:
            rows = db.execute(sql, (*args, limit + 1)).fetchall()
            return _page(_summaries(db, [_job(r) for r in rows[:limit]]), len(rows) > limit, _job_position)

        return await self._read(q)

    async def client_jobs(self, client_id: str, query: ClientJobQuery) -> list[JobSummary]:
        """A v0.3 client's jobs as its /requester/list asks for them, filtered, sorted and
        limited in SQL."""
        sql, args = _client_jobs_sql(client_id, query)

        def q(db: sqlite3.Connection) -> list[JobSummary]:
            return _summaries(db, [_job(r) for r in db.execute(sql, args).fetchall()])

        return await self._read(q)

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
            for job_id in job_ids:
                if self.db.execute(_HELD_BACK, (job_id, *_TERMINAL, before)).fetchone() is not None:
                    continue
                self.db.execute(_TOMBSTONE, (now, job_id))
                self.db.execute(
                    "DELETE FROM history WHERE execution_id IN (SELECT id FROM executions WHERE job_id = ?)",
                    (job_id,),
                )
                executions += self.db.execute("DELETE FROM executions WHERE job_id = ?", (job_id,)).rowcount
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
    """A jobs row as a JobRecord (`state` comes with schema 4)."""
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
        state=JobState(row["state"]),
    )


_SET_JOB_STATE = "UPDATE jobs SET state = " + JOB_STATE_SQL + " WHERE id = ?"
# The same when the execution just written is active: JOB_STATE_SQL is then InProgress, so the
# per-job derivation (a window over the job's executions) is skipped on most transitions.
_SET_JOB_IN_PROGRESS = "UPDATE jobs SET state = 'InProgress' WHERE id = ?"
# Above every character a job ID holds: `id >= p AND id < p + _TOP` is "id starts with p" as an
# index range.
_TOP = "\U0010ffff"


def _job_state_sql(written: ExecutionState) -> str:
    """The statement that keeps a job's state after one of its executions was written in `written`."""
    return _SET_JOB_STATE if written.is_terminal else _SET_JOB_IN_PROGRESS


def _check_move(cur: Execution, new: ExecutionState, version: int | None) -> None:
    """InvalidTransition unless `cur` may move to `new` (and is at `version`, when given)."""
    if version is not None and cur.version != version:
        why = f"it changed meanwhile (version {cur.version}, not {version})"
        raise InvalidTransition(cur.id, cur.state, new, why)
    if not cur.state.may_move_to(new):
        why = "it has already ended" if cur.state.is_terminal else "the lifecycle does not allow it"
        raise InvalidTransition(cur.id, cur.state, new, why)


def _store_job_extras(db: sqlite3.Connection, job: JobRecord) -> JobRecord:
    """Write a just stored job's labels (Spec.Annotations, in order) and state; `job` with it."""
    db.execute("DELETE FROM job_labels WHERE job_id = ?", (job.id,))
    db.execute(
        """INSERT INTO job_labels (job_id, position, label, created_at)
        SELECT ?, a.key, a.value, ? FROM json_each(?, '$.Spec.Annotations') AS a WHERE a.type = 'text'""",
        (job.id, job.created_at, job.job_json),
    )
    db.execute(_SET_JOB_STATE, (job.id,))
    row = db.execute("SELECT state FROM jobs WHERE id = ?", (job.id,)).fetchone()
    return replace(job, state=JobState(row["state"]))


def _page_where(after: Position | None) -> tuple[list[str], list[object]]:
    """The condition of a newest-first page that starts below `after`."""
    if after is None:
        return ["1 = 1"], []
    return ["(created_at, id) < (?, ?)"], [after[0], after[1]]


def _execution_position(ex: Execution) -> Position:
    return (ex.created_at, ex.id)


def _job_position(job: JobSummary) -> Position:
    return (job.record.created_at, job.record.id)


def _page(items: list[T], more: bool, position: Callable[[T], Position]) -> Page[T]:
    return Page(items, position(items[-1]) if more and items else None)


def _summaries(db: sqlite3.Connection, records: list[JobRecord]) -> list[JobSummary]:
    """The jobs with their labels and shard counts: two indexed queries for the whole list."""
    if not records:
        return []
    ids = [r.id for r in records]
    marks = ",".join("?" * len(ids))
    labels: dict[str, list[str]] = {}
    sql = f"SELECT job_id, label FROM job_labels WHERE job_id IN ({marks}) ORDER BY job_id, position"
    for row in db.execute(sql, ids):
        labels.setdefault(row["job_id"], []).append(row["label"])
    sql = f"SELECT job_id, COUNT(DISTINCT shard_index) AS n FROM executions WHERE job_id IN ({marks}) GROUP BY job_id"
    shards = {row["job_id"]: row["n"] for row in db.execute(sql, ids)}
    return [JobSummary(r, tuple(labels.get(r.id, ())), shards.get(r.id, 0)) for r in records]


def _client_jobs_sql(client_id: str, query: ClientJobQuery) -> tuple[str, list[object]]:
    where: list[str] = ["client_id = ?"]
    args: list[object] = [client_id]
    if query.id:
        where.append("(id = ? OR (? AND id >= ? AND id < ?))")
        args += [query.id, len(query.id) == query.prefix_len, query.id, query.id + _TOP]
    if query.include or query.exclude:
        # As v0.3.23: the job's first tag found in either set decides, include before exclude;
        # with none found, a job is listed only when nothing is to be included.
        tags = (*query.include, *query.exclude)
        first = (
            f"SELECT label IN ({','.join('?' * len(query.include))}) FROM job_labels"
            f" WHERE job_id = jobs.id AND label IN ({','.join('?' * len(tags))}) ORDER BY position LIMIT 1"
        )
        where.append(f"COALESCE(({first}), ?)")
        args += [*query.include, *tags, not query.include]
    direction = "DESC" if query.reverse else "ASC"
    order = {"id": f"id {direction}", "created_at": f"created_at {direction}, id {direction}"}
    sql = f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY {order.get(query.sort_by, 'created_at DESC, id DESC')} LIMIT ?"
    return sql, [*args, query.limit]
