"""The registry database schema and its ordered migrations.

Three SQLite files, never one:

* ``registry.db`` — models, versions, aliases, alias history, the event log, the heartbeat.
  Replicated to every node: it must never hold a secret.
* ``secrets.db`` — token hashes, central's keys (the page-token MAC key), and webhook
  subscriptions with their signing secrets (a receiver's URL is often a credential too).
  Replicated to its own path, which sidecars never read.
* ``deliveries.db`` — webhook delivery state: each subscription's position in the event log and
  every attempt. Operational, rewritten many times a second under load: never replicated
  (:data:`DELIVERY_MIGRATIONS`; ``central/delivery_log.py``).

The schema version is SQLite's ``PRAGMA user_version``. ``MIGRATIONS[i]`` takes a database from
version ``i`` to ``i + 1``; they are applied in order at start, each in its own transaction. A
database whose version is above ``len(MIGRATIONS)`` comes from a newer release and is refused.

Conventions the sidecar relies on (it loads ``registry.db`` read-only, with plain ``sqlite3``):

* Times are TEXT in one fixed UTC format, ``2026-11-27T09:34:47.123456Z`` (see
  :func:`modelreg.central.records.now`), so string order is time order.
* JSON columns (``tags``, ``params``, ``metrics``, ``details``) hold a JSON object, never NULL.
* ``events.revision`` is the registry revision: ``MAX(revision)`` is the current one.
* ``heartbeat`` has exactly one row (``id = 1``) once central has started.
"""

from __future__ import annotations

import sqlite3

__all__ = [
    "DELIVERY_MIGRATIONS",
    "MIGRATIONS",
    "SECRETS_MIGRATIONS",
    "SchemaTooNew",
    "migrate",
    "schema_version",
]


class SchemaTooNew(Exception):
    """The database was written by a newer modelreg release than this one."""


MIGRATIONS: list[str] = [
    # 0 -> 1: the registry.
    """
    CREATE TABLE models (
        id            INTEGER PRIMARY KEY,
        name          TEXT NOT NULL UNIQUE,
        description   TEXT NOT NULL DEFAULT '',
        owner         TEXT NOT NULL DEFAULT '',
        tags          TEXT NOT NULL DEFAULT '{}',
        created_by    TEXT NOT NULL,
        created_at    TEXT NOT NULL,
        updated_at    TEXT NOT NULL,
        -- the highest version number ever assigned; never decreases, so numbers are never reused
        last_version  INTEGER NOT NULL DEFAULT 0
    );

    CREATE TABLE versions (
        model_id         INTEGER NOT NULL REFERENCES models(id),
        version          INTEGER NOT NULL,
        -- immutable once registered
        artifact_uri     TEXT NOT NULL,
        sha256           TEXT NOT NULL,
        size             INTEGER,
        format           TEXT NOT NULL DEFAULT '',
        run_id           TEXT,
        code_commit      TEXT,
        dataset_uri      TEXT,
        dataset_digest   TEXT,
        parent_version   INTEGER,
        params           TEXT NOT NULL DEFAULT '{}',
        metrics          TEXT NOT NULL DEFAULT '{}',
        created_by       TEXT NOT NULL,
        created_at       TEXT NOT NULL,
        idempotency_key  TEXT,
        -- mutable
        description      TEXT NOT NULL DEFAULT '',
        tags             TEXT NOT NULL DEFAULT '{}',
        -- registered | approved | rejected | archived
        status           TEXT NOT NULL DEFAULT 'registered',
        -- the approve/reject decision (kept when the version is archived later)
        decision         TEXT,
        decided_by       TEXT,
        decided_at       TEXT,
        decision_comment TEXT,
        archived_by      TEXT,
        archived_at      TEXT,
        archive_reason   TEXT,
        PRIMARY KEY (model_id, version)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX versions_idempotency ON versions(model_id, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX versions_run ON versions(run_id, sha256) WHERE run_id IS NOT NULL;
    CREATE INDEX versions_created ON versions(created_at);

    CREATE TABLE aliases (
        model_id    INTEGER NOT NULL REFERENCES models(id),
        name        TEXT NOT NULL,
        version     INTEGER NOT NULL,
        updated_by  TEXT NOT NULL,
        updated_at  TEXT NOT NULL,
        revision    INTEGER NOT NULL,
        PRIMARY KEY (model_id, name)
    ) WITHOUT ROWID;

    -- every move of an alias; to_version NULL means the alias was deleted
    CREATE TABLE alias_history (
        id            INTEGER PRIMARY KEY,
        model_id      INTEGER NOT NULL REFERENCES models(id),
        alias         TEXT NOT NULL,
        from_version  INTEGER,
        to_version    INTEGER,
        actor         TEXT NOT NULL,
        reason        TEXT NOT NULL DEFAULT '',
        at            TEXT NOT NULL,
        revision      INTEGER NOT NULL,
        -- 'set' | 'delete' | 'rollback'
        action        TEXT NOT NULL
    );
    CREATE INDEX alias_history_lookup ON alias_history(model_id, alias, at);

    -- the append-only, hash-chained event log; revision is the registry revision
    CREATE TABLE events (
        revision   INTEGER PRIMARY KEY,
        at         TEXT NOT NULL,
        actor      TEXT NOT NULL,
        action     TEXT NOT NULL,
        subject    TEXT NOT NULL,
        details    TEXT NOT NULL DEFAULT '{}',
        prev_hash  TEXT NOT NULL,
        hash       TEXT NOT NULL
    );

    -- one row, id = 1, rewritten every few seconds by central: freshness for sidecars
    CREATE TABLE heartbeat (
        id        INTEGER PRIMARY KEY CHECK (id = 1),
        at        TEXT NOT NULL,
        revision  INTEGER NOT NULL
    );

    -- instance facts: instance_id, created_at
    CREATE TABLE meta (
        key    TEXT PRIMARY KEY,
        value  TEXT NOT NULL
    );
    """,
]

SECRETS_MIGRATIONS: list[str] = [
    # 0 -> 1: API tokens. Only the sha256 of each secret is stored.
    """
    CREATE TABLE tokens (
        name        TEXT PRIMARY KEY,
        role        TEXT NOT NULL,
        -- JSON list of model-name globs; '[]' means every model
        models      TEXT NOT NULL DEFAULT '[]',
        hash        TEXT NOT NULL UNIQUE,
        created_by  TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        last_used_at TEXT
    );
    """,
    # 1 -> 2: central's own keys (the page-token MAC key): secret, so never in registry.db.
    """
    CREATE TABLE keys (
        name        TEXT PRIMARY KEY,
        value       BLOB NOT NULL,
        created_at  TEXT NOT NULL
    );
    """,
    # 2 -> 3: webhook subscriptions. The secret is kept as is (signing needs it), in this file
    # only; events about a subscription carry its URL's origin, never its path or secret.
    """
    CREATE TABLE webhooks (
        id           TEXT PRIMARY KEY,
        url          TEXT NOT NULL,
        -- whsec_<base64>; the previous one signs too until previous_until (secret rotation)
        secret       TEXT NOT NULL,
        previous_secret TEXT,
        previous_until  TEXT,
        -- JSON lists of action globs and model-name globs; '[]' models means every event
        events       TEXT NOT NULL DEFAULT '["*"]',
        models       TEXT NOT NULL DEFAULT '[]',
        description  TEXT NOT NULL DEFAULT '',
        enabled      INTEGER NOT NULL DEFAULT 1,
        disabled_reason TEXT,
        created_by   TEXT NOT NULL,
        created_at   TEXT NOT NULL,
        updated_at   TEXT NOT NULL,
        -- a coarse copy of the delivery position (deliveries.db has the exact one): what a
        -- replacement host resumes from when deliveries.db is gone with the old one
        checkpoint   INTEGER NOT NULL
    );
    """,
]

DELIVERY_MIGRATIONS: list[str] = [
    # 0 -> 1: delivery state of webhook subscriptions.
    """
    -- every event up to this revision is done for the subscription: delivered, or not matching
    CREATE TABLE cursors (
        subscription  TEXT PRIMARY KEY,
        revision      INTEGER NOT NULL,
        updated_at    TEXT NOT NULL
    );

    -- one message to one subscription: an event, a redelivery of one, or a test ping
    CREATE TABLE deliveries (
        id            INTEGER PRIMARY KEY,
        subscription  TEXT NOT NULL,
        -- the event's revision; NULL for a test ping
        revision      INTEGER,
        action        TEXT NOT NULL,
        -- the webhook-id header: the same for every attempt and redelivery of one event
        message_id    TEXT NOT NULL,
        -- 'event' | 'redelivery' | 'test'
        kind          TEXT NOT NULL,
        -- 'pending' (being retried) | 'delivered' | 'failed'
        state         TEXT NOT NULL,
        attempts      INTEGER NOT NULL DEFAULT 0,
        created_at    TEXT NOT NULL,
        updated_at    TEXT NOT NULL,
        next_attempt_at TEXT,
        redelivery_of INTEGER
    );
    CREATE INDEX deliveries_subscription ON deliveries(subscription, id);
    CREATE INDEX deliveries_updated ON deliveries(updated_at);

    CREATE TABLE attempts (
        delivery    INTEGER NOT NULL,
        n           INTEGER NOT NULL,
        at          TEXT NOT NULL,
        -- the HTTP status; NULL when there was no answer
        status      INTEGER,
        latency_ms  REAL NOT NULL,
        -- the start of the answer's body (at most 1 KiB, as text)
        response    TEXT NOT NULL DEFAULT '',
        -- why the attempt failed ('' when it succeeded)
        error       TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (delivery, n)
    ) WITHOUT ROWID;
    """,
]


def schema_version(conn: sqlite3.Connection) -> int:
    """The database's recorded schema version (0 for a new file)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, migrations: list[str] = MIGRATIONS) -> int:
    """Bring ``conn``'s database up to date; return the version it is at now.

    Raises :class:`SchemaTooNew` when the file was written by a newer release. Each step runs
    in its own ``BEGIN IMMEDIATE`` transaction together with its ``user_version`` bump, so a
    crash mid-migration leaves the previous version intact. ``conn`` must be in autocommit mode
    (``isolation_level=None``).
    """
    current = schema_version(conn)
    target = len(migrations)
    if current > target:
        raise SchemaTooNew(
            f"database schema version {current} is newer than this modelreg supports "
            f"({target}); upgrade modelreg or point it at another data directory"
        )
    for step in range(current, target):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(migrations[step]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {step + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return target


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (``executescript`` would commit implicitly)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
