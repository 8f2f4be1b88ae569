"""``deliveries.db``: where each webhook subscription stands, and every delivery attempt.

Operational state, not registry state: it changes with every attempt (a thousand rows a second
at 100 events/s and ten subscriptions), so it stays out of the replicated ``registry.db`` and is
not replicated at all (``secrets.db`` keeps a coarse copy of each position: ``checkpoint`` in
``central/webhooks.py``). Schema: :data:`modelreg.central.schema.DELIVERY_MIGRATIONS`.

* ``cursors``: per subscription, the revision up to which every event is done (delivered, or
  not matching its filter). Delivery resumes after it when central restarts, even after kill
  -9: an event past the cursor is sent (again), so every committed event is delivered at least
  once.
* ``deliveries`` and ``attempts``: one row per message (an event, a redelivery, a test ping)
  and one per attempt (status, latency, the first KiB of the answer, the error).

Writes never wait: :meth:`DeliveryLog.save` queues the rows and a flusher commits the queue in
one transaction every :data:`FLUSH_INTERVAL_S` (``synchronous=NORMAL`` in WAL mode: a commit
survives a process crash). Reads flush first, so they see every attempt made so far. One thread
owns the connection; nothing else opens the file.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from modelreg.central.pagetoken import PageTokens
from modelreg.central.records import TIME_FORMAT
from modelreg.central.schema import DELIVERY_MIGRATIONS, migrate
from modelreg.errors import DeliveryNotFound, InvalidField, Unavailable

__all__ = [
    "EXCERPT_CHARS",
    "FLUSH_INTERVAL_S",
    "KEEP_PER_SUBSCRIPTION",
    "Attempt",
    "Delivery",
    "DeliveryLog",
]

log = logging.getLogger(__name__)

#: Seconds between two commits of queued rows.
FLUSH_INTERVAL_S = 0.02
#: Seconds between two prunes of old deliveries.
PRUNE_INTERVAL_S = 60.0
#: Deliveries kept per subscription, newest first (older ones go even within the history).
KEEP_PER_SUBSCRIPTION = 10_000
#: Characters of an answer's body kept with its attempt.
EXCERPT_CHARS = 1024
STATES = ("pending", "delivered", "failed")


@dataclass(frozen=True)
class Attempt:
    """One request to a receiver. ``status`` None: no HTTP answer (``error`` says why)."""

    n: int
    at: str
    status: int | None
    latency_ms: float
    response: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def record(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "at": self.at,
            "status": self.status,
            "latency_ms": round(self.latency_ms, 3),
            "response": self.response,
            "error": self.error,
        }


@dataclass
class Delivery:
    """One message to one subscription, with its last attempt."""

    id: int
    subscription: str
    revision: int | None
    action: str
    message_id: str
    kind: str
    state: str = "pending"
    attempts: int = 0
    created_at: str = ""
    updated_at: str = ""
    next_attempt_at: str | None = None
    redelivery_of: int | None = None
    last: Attempt | None = field(default=None, compare=False)

    def record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "webhook": self.subscription,
            "revision": self.revision,
            "action": self.action,
            "message_id": self.message_id,
            "kind": self.kind,
            "state": self.state,
            "attempts": self.attempts,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "next_attempt_at": self.next_attempt_at,
            "redelivery_of": self.redelivery_of,
            "last_attempt": None if self.last is None else self.last.record(),
        }


_DELIVERY_COLUMNS = (
    "id, subscription, revision, action, message_id, kind, state, attempts, created_at,"
    " updated_at, next_attempt_at, redelivery_of"
)
_ATTEMPT_COLUMNS = "n, at, status, latency_ms, response, error"


def _delivery(row: tuple[Any, ...], last: tuple[Any, ...] | None = None) -> Delivery:
    found = Delivery(*row)
    if last is not None and last[0] is not None:
        found.last = Attempt(*last)
    return found


class DeliveryLog:
    """``deliveries.db`` of one central. ``await open()`` / ``await close()``; no I/O in the
    constructor. Methods raise :class:`Unavailable` when the file cannot be written or read.
    """

    def __init__(self, path: Path, history_s: float) -> None:
        self._path = path
        self._history_s = history_s
        self._pool: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._rows: list[tuple[Delivery, Attempt | None]] = []
        self._cursors: dict[str, int] = {}
        self._dirty_cursors: set[str] = set()
        self._forgotten: set[str] = set()
        self._next_id = 1
        self._flusher: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._flushed: asyncio.Event | None = None
        self._closing = False
        self._last_prune = 0.0
        #: subscription -> revision, as loaded at open.
        self.cursors: dict[str, int] = {}
        #: subscription -> its pending event delivery (the one being retried), as loaded.
        self.pending: dict[str, Delivery] = {}

    async def open(self) -> None:
        """Open (and migrate) the file; load cursors and pending deliveries. Raises
        ``sqlite3.Error``, ``OSError`` and :class:`modelreg.central.schema.SchemaTooNew`."""
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="deliveries")
        try:
            await self._run(self._open_sync)
        except BaseException:
            self._pool.shutdown(wait=True)
            self._pool = None
            raise
        self._closing = False
        self._wakeup, self._flushed = asyncio.Event(), asyncio.Event()
        self._flusher = asyncio.create_task(self._flush_loop(), name="deliveries-flush")

    def _open_sync(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            migrate(conn, DELIVERY_MIGRATIONS)
            self.cursors = dict(conn.execute("SELECT subscription, revision FROM cursors"))
            self._cursors = dict(self.cursors)
            top = conn.execute("SELECT coalesce(max(id), 0) FROM deliveries").fetchone()[0]
            self._next_id = int(top) + 1
            rows = conn.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries"
                " WHERE state = 'pending' AND kind = 'event' ORDER BY id"
            ).fetchall()
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        for row in rows:
            delivery = _delivery(row)
            self.pending[delivery.subscription] = delivery

    async def close(self) -> None:
        """Commit what is queued, then close the file."""
        if self._pool is None:
            return
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._flusher is not None:
            await self._flusher
            self._flusher = None
        pool, self._pool = self._pool, None
        await asyncio.get_running_loop().run_in_executor(pool, self._close_sync)
        pool.shutdown(wait=True)

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self._pool is None:
            raise Unavailable("the delivery log is not open")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # -- writing -----------------------------------------------------------------------------

    def new_id(self) -> int:
        """A fresh delivery id (ids are assigned here, before the row is written)."""
        value, self._next_id = self._next_id, self._next_id + 1
        return value

    def save(self, delivery: Delivery, attempt: Attempt | None = None) -> None:
        """Queue the delivery's current state (and a new attempt of it) for the next commit."""
        self._rows.append((_copy(delivery), attempt))
        if self._wakeup is not None:
            self._wakeup.set()

    def advance(self, subscription: str, revision: int) -> None:
        """Queue the subscription's new position (only the last one queued is written)."""
        if revision > self._cursors.get(subscription, -1):
            self._cursors[subscription] = revision
            self._dirty_cursors.add(subscription)
            if self._wakeup is not None:
                self._wakeup.set()

    def forget(self, subscription: str) -> None:
        """Queue the removal of everything about a deleted subscription."""
        self._cursors.pop(subscription, None)
        self._forgotten.add(subscription)
        if self._wakeup is not None:
            self._wakeup.set()

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        if self._wakeup is None or self._flushed is None or self._pool is None:
            return
        while self._rows or self._dirty_cursors or self._forgotten:
            self._flushed.clear()
            self._wakeup.set()
            await self._flushed.wait()

    async def _flush_loop(self) -> None:
        assert self._wakeup is not None and self._flushed is not None
        while True:
            if not (self._rows or self._dirty_cursors or self._forgotten):
                self._flushed.set()
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                if not self._closing:
                    await asyncio.sleep(FLUSH_INTERVAL_S)  # gather a batch
                continue
            rows, self._rows = self._rows, []
            cursors = {s: self._cursors[s] for s in self._dirty_cursors if s in self._cursors}
            forgotten, self._forgotten = self._forgotten, set()
            self._dirty_cursors = set()
            prune = time.monotonic() - self._last_prune > PRUNE_INTERVAL_S
            try:
                await self._run(self._write, rows, cursors, forgotten, prune)
                if prune:
                    self._last_prune = time.monotonic()
            except Exception:  # never stop flushing: later batches may succeed
                log.exception("writing %d webhook deliveries failed", len(rows))
                if not self._closing:
                    self._rows[:0] = rows  # retry them in order with the next batch
                    for sub, revision in cursors.items():
                        self.advance(sub, revision)
                    await asyncio.sleep(1.0)

    def _write(
        self,
        rows: list[tuple[Delivery, Attempt | None]],
        cursors: dict[str, int],
        forgotten: set[str],
        prune: bool,
    ) -> None:
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                f"INSERT INTO deliveries ({_DELIVERY_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (id) DO UPDATE SET state = excluded.state, attempts ="
                " excluded.attempts, updated_at = excluded.updated_at, next_attempt_at ="
                " excluded.next_attempt_at",
                [_delivery_values(d) for d, _ in rows],
            )
            conn.executemany(
                f"INSERT OR REPLACE INTO attempts (delivery, {_ATTEMPT_COLUMNS})"
                " VALUES (?,?,?,?,?,?,?)",
                [
                    (d.id, a.n, a.at, a.status, a.latency_ms, a.response, a.error)
                    for d, a in rows
                    if a is not None
                ],
            )
            stamp = datetime.now(UTC).strftime(TIME_FORMAT)
            conn.executemany(
                "INSERT INTO cursors (subscription, revision, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (subscription) DO UPDATE SET revision = excluded.revision,"
                " updated_at = excluded.updated_at",
                [(sub, revision, stamp) for sub, revision in cursors.items()],
            )
            for sub in forgotten:
                conn.execute("DELETE FROM cursors WHERE subscription = ?", (sub,))
                conn.execute(
                    "DELETE FROM attempts WHERE delivery IN"
                    " (SELECT id FROM deliveries WHERE subscription = ?)",
                    (sub,),
                )
                conn.execute("DELETE FROM deliveries WHERE subscription = ?", (sub,))
            if prune:
                self._prune(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _prune(self, conn: sqlite3.Connection) -> None:
        """Drop finished deliveries older than the history, and past the newest
        :data:`KEEP_PER_SUBSCRIPTION` of each subscription; never a pending one."""
        cutoff = (datetime.now(UTC) - timedelta(seconds=self._history_s)).strftime(TIME_FORMAT)
        doomed: list[tuple[str, tuple[Any, ...]]] = [("updated_at < ?", (cutoff,))]
        for (sub,) in conn.execute("SELECT DISTINCT subscription FROM deliveries").fetchall():
            row = conn.execute(
                "SELECT id FROM deliveries WHERE subscription = ? ORDER BY id DESC"
                " LIMIT 1 OFFSET ?",
                (sub, KEEP_PER_SUBSCRIPTION),
            ).fetchone()
            if row is not None:
                doomed.append(("subscription = ? AND id <= ?", (sub, row[0])))
        for where, values in doomed:
            condition = f"state != 'pending' AND {where}"
            conn.execute(
                "DELETE FROM attempts WHERE delivery IN"
                f" (SELECT id FROM deliveries WHERE {condition})",
                values,
            )
            conn.execute(f"DELETE FROM deliveries WHERE {condition}", values)

    # -- reading -----------------------------------------------------------------------------

    async def page(
        self,
        subscription: str,
        limit: int,
        tokens: PageTokens,
        page_token: str | None = None,
        state: str | None = None,
    ) -> dict[str, Any]:
        """Deliveries of a subscription, newest first: ``{"items", "next_page_token"}`` (page
        tokens made and checked by ``tokens``, the registry's). Raises :class:`InvalidField` for
        a bad ``page_token`` or ``state``."""
        before = 2**63 - 1
        if page_token is not None:
            position = tokens.decode("deliveries", page_token)
            if isinstance(position, bool) or not isinstance(position, int) or position < 1:
                raise InvalidField("invalid page_token", field="page_token")
            before = position
        if state is not None and state not in STATES:
            raise InvalidField(f"state must be one of {', '.join(STATES)}", field="state")
        await self.flush()

        def select(conn: sqlite3.Connection) -> list[Delivery]:
            query = (
                f"SELECT {', '.join('d.' + c.strip() for c in _DELIVERY_COLUMNS.split(','))},"
                f" {', '.join('a.' + c.strip() for c in _ATTEMPT_COLUMNS.split(','))}"
                " FROM deliveries d LEFT JOIN attempts a ON a.delivery = d.id AND a.n = d.attempts"
                " WHERE d.subscription = ? AND d.id < ?"
                + (" AND d.state = ?" if state else "")
                + " ORDER BY d.id DESC LIMIT ?"
            )
            args: tuple[Any, ...] = (subscription, before)
            args += ((state,) if state else ()) + (limit + 1,)
            return [_delivery(row[:12], row[12:]) for row in conn.execute(query, args)]

        found = await self._read(select)
        more = len(found) > limit
        items = found[:limit]
        return {
            "items": [d.record() for d in items],
            "next_page_token": tokens.encode("deliveries", items[-1].id) if more else None,
        }

    async def get(self, subscription: str, delivery: int) -> dict[str, Any]:
        """One delivery with every attempt (``attempt_log``, oldest first). Raises
        :class:`DeliveryNotFound`."""
        await self.flush()

        def select(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE id = ? AND subscription = ?",
                (delivery, subscription),
            ).fetchone()
            if row is None:
                return None
            attempts = [
                Attempt(*a)
                for a in conn.execute(
                    f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE delivery = ? ORDER BY n",
                    (delivery,),
                )
            ]
            found = _delivery(row)
            found.last = attempts[-1] if attempts else None
            return {**found.record(), "attempt_log": [a.record() for a in attempts]}

        result = await self._read(select)
        if result is None:
            raise DeliveryNotFound(
                f"no delivery {delivery} of webhook {subscription}",
                webhook=subscription,
                delivery=delivery,
            )
        record: dict[str, Any] = result
        return record

    async def _read(self, fn: Any) -> Any:
        def run() -> Any:
            conn = self._conn
            if conn is None:
                raise Unavailable("the delivery log is not open")
            try:
                conn.execute("BEGIN")
                try:
                    return fn(conn)
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                log.error("reading deliveries failed: %r", exc)
                raise Unavailable("the delivery log cannot be read") from exc

        return await self._run(run)


def _copy(delivery: Delivery) -> Delivery:
    return copy.copy(delivery)


def _delivery_values(d: Delivery) -> tuple[Any, ...]:
    return (
        d.id,
        d.subscription,
        d.revision,
        d.action,
        d.message_id,
        d.kind,
        d.state,
        d.attempts,
        d.created_at,
        d.updated_at,
        d.next_attempt_at,
        d.redelivery_of,
    )
