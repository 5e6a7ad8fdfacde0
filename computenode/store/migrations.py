"""The store's schema: numbered migrations, applied in order, one transaction each.

meta's schema_version row records how many are applied (the schema before numbered migrations
wrote schema_version=1 too, so those databases are adopted as version 1). To change the schema,
append a tuple of statements to MIGRATIONS; never edit one already released.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from computenode.errors import SchemaTooNew

# A job's state (model JobState) from its executions, as Bacalhau's requester reports it (the
# reference derivation is `job_state` in tests/store/test_job_state.py):
# InProgress while any execution is active; else over each shard's telling execution (a
# Completed one, else the newest attempt): none -> New (Cancelled once cancelled), the job
# cancelled or every shard Cancelled -> Cancelled, all Completed -> Completed, some ->
# PartialError, none -> Error. An expression over the row `jobs`; frozen as migration 5 uses it
# (a change to the derivation is a new constant and a new migration).
JOB_STATE_SQL = """(CASE
    WHEN EXISTS (SELECT 1 FROM executions AS e WHERE e.job_id = jobs.id AND e.state IN
        ('Created', 'BidAccepted', 'Running', 'WaitingVerification', 'ResultAccepted', 'Publishing'))
    THEN 'InProgress'
    ELSE (SELECT CASE
        WHEN COUNT(*) = 0 THEN (CASE WHEN jobs.cancelled THEN 'Cancelled' ELSE 'New' END)
        WHEN jobs.cancelled OR SUM(s.state = 'Cancelled') = COUNT(*) THEN 'Cancelled'
        WHEN SUM(s.state = 'Completed') = COUNT(*) THEN 'Completed'
        WHEN SUM(s.state = 'Completed') > 0 THEN 'PartialError'
        ELSE 'Error' END
        FROM (SELECT CASE WHEN MAX(e.state = 'Completed') OVER w THEN 'Completed' ELSE e.state END AS state,
                ROW_NUMBER() OVER (w ORDER BY json_extract(e.record, '$.attempt') DESC, e.created_at DESC) AS nth
            FROM executions AS e WHERE e.job_id = jobs.id WINDOW w AS (PARTITION BY e.shard_index)) AS s
        WHERE s.nth = 1)
    END)"""

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
    # 5: reads in O(page). Indexes for every query (newest-first pages are (created_at, id)
    # descending; active executions are an IN over (state, created_at)); the job's state stored
    # with it (kept by _SET_JOB_STATE in each write's transaction) and its Spec.Annotations as
    # rows, in order, for the `label` filter and v0.3's include/exclude tags.
    (
        "DROP INDEX executions_state",
        "CREATE INDEX executions_state_created ON executions (state, created_at, id)",
        "CREATE INDEX executions_created ON executions (created_at, id)",
        "ALTER TABLE jobs ADD COLUMN state TEXT NOT NULL DEFAULT 'New'",
        "CREATE INDEX jobs_created ON jobs (created_at, id)",
        "CREATE INDEX jobs_client_created ON jobs (client_id, created_at, id)",
        "CREATE INDEX jobs_state_created ON jobs (state, created_at, id)",
        """CREATE TABLE job_labels (
    job_id TEXT NOT NULL, position INTEGER NOT NULL, label TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (job_id, position))""",
        "CREATE INDEX job_labels_label ON job_labels (label, created_at, job_id)",
        # A deleted job takes its labels along, whoever deletes it.
        """CREATE TRIGGER jobs_labels_deleted AFTER DELETE ON jobs
    BEGIN DELETE FROM job_labels WHERE job_id = OLD.id; END""",
        """INSERT INTO job_labels (job_id, position, label, created_at)
    SELECT jobs.id, a.key, a.value, jobs.created_at FROM jobs, json_each(jobs.job, '$.Spec.Annotations') AS a
    WHERE json_valid(jobs.job) AND a.type = 'text'""",
        "UPDATE jobs SET state = " + JOB_STATE_SQL,
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


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
