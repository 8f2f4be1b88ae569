"""The one write path to ``registry.db``, and its read connections.

Why a dedicated single-thread executor and not aiosqlite: every write must run a *plain*
function of a ``sqlite3`` connection (the domain rules in :mod:`modelreg.central.policy` are
ordinary synchronous code, testable without an event loop), and the writer batches concurrent writes
into one transaction (group commit). Both need control over which statements share a
transaction, which aiosqlite's per-call proxy hides. One thread owns the one write connection,
so SQLite's single-writer rule is honoured by construction and nothing ever waits on
``busy_timeout`` inside the process.

Group commit: callers of :meth:`Store.write` queue their function; the writer task takes
everything queued (up to :data:`MAX_BATCH`) and runs it in the writer thread as::

    BEGIN IMMEDIATE
      SAVEPOINT w; fn1(conn, ctx1); RELEASE w      -- fn1's event is revision n+1
      SAVEPOINT w; fn2(conn, ctx2) raises -> ROLLBACK TO w; RELEASE w   -- no trace of fn2
      SAVEPOINT w; fn3(conn, ctx3); RELEASE w      -- revision n+2
    COMMIT

so a failing write never rolls back its neighbours, each write keeps its own event, and a
write's future resolves only after ``COMMIT`` returned: an acknowledged write is durable in
the WAL. While one batch commits the next one queues up, which is what lets central sustain
hundreds of registrations per second with ``synchronous=NORMAL``.

Listeners (:meth:`Store.add_listener`) get the events of each committed batch, in revision
order, on the event loop, before any writer of the batch is answered: the event feed of
``central/feed.py`` (long-polls, the SSE stream, webhooks) hears of a write without reading the
database, and a caller that long-polls after its write's revision finds it there.

Reads run on read-only connections (``mode=ro``), one per reader thread, each inside a short
``BEGIN … COMMIT`` so that a multi-statement read sees one snapshot.

Checkpoints: ``wal_autocheckpoint=0`` and no explicit checkpoint, so while central runs only
Litestream checkpoints the WAL. An unreplicated store (``--replica none``) keeps SQLite's own
autocheckpoint, since nobody else would. SQLite also checkpoints when the *last* connection to
the file closes; at shutdown that happens after the replicator has flushed (cleanup order in
``central/app.py``), so it cannot lose a frame Litestream has not copied. (Python 3.11's
``sqlite3`` cannot set ``SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE``.)
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from modelreg.central import audit, queries
from modelreg.central.records import canonical_json, now
from modelreg.central.schema import migrate
from modelreg.errors import RegistryError, Unavailable

__all__ = ["MAX_BATCH", "READ_THREADS", "Listener", "Store", "WriteContext"]

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Most writes committed in one transaction.
MAX_BATCH = 256
#: Reader threads (each with its own read-only connection).
READ_THREADS = 2
#: Milliseconds a connection waits for a lock held by another process (Litestream).
BUSY_TIMEOUT_MS = 5000

#: Settings Litestream requires; the app never checkpoints by itself.
_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)


class WriteContext:
    """What a write function gets beside the connection: the write's time and its event.

    ``at`` is the transaction time, never earlier than the previous event's time, so event
    times (and alias history times) are ordered like revisions.
    """

    def __init__(self, last_revision: int, last_hash: str, last_at: str) -> None:
        current = now()
        self.at: str = current if current > last_at else last_at
        self._last_revision = last_revision
        self._last_hash = last_hash
        #: The appended event (the API's event dict), once :meth:`append_event` ran.
        self.event: dict[str, Any] | None = None

    @property
    def revision(self) -> int:
        """The revision this write's event gets (or got)."""
        return self._last_revision + 1

    @property
    def last_revision(self) -> int:
        """The registry revision before this write."""
        return self._last_revision

    @property
    def last_hash(self) -> str:
        """The chain hash of :attr:`last_revision` (the genesis hash for an empty registry)."""
        return self._last_hash

    def append_event(
        self,
        conn: sqlite3.Connection,
        actor: str,
        action: str,
        subject: str,
        details: dict[str, Any],
    ) -> int:
        """Insert this write's event row (hash-chained); return its revision.

        Raises ``RuntimeError`` on a second call: one write, one event.
        """
        if self.event is not None:
            raise RuntimeError("a write appends exactly one event")
        revision = self.revision
        stored = canonical_json(details)
        # The hash covers the details exactly as a reader will parse them back.
        digest = audit.event_hash(
            self._last_hash, revision, self.at, actor, action, subject, details
        )
        conn.execute(
            "INSERT INTO events (revision, at, actor, action, subject, details, prev_hash, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (revision, self.at, actor, action, subject, stored, self._last_hash, digest),
        )
        self.event = {
            "revision": revision,
            "at": self.at,
            "actor": actor,
            "action": action,
            "subject": subject,
            "details": details,
            "prev_hash": self._last_hash,
            "hash": digest,
        }
        return revision


WriteFn = Callable[[sqlite3.Connection, WriteContext], Any]
_Outcome = tuple[bool, Any]
#: Called with the events (the API's event dicts) of each committed batch, in revision order.
Listener = Callable[[list[dict[str, Any]]], None]


class Store:
    """Owns ``registry.db``: one write connection in one thread, read-only readers.

    Lifecycle: ``await open()`` … ``await close()``. No I/O in the constructor.
    """

    def __init__(self, path: Path, *, replicated: bool = True) -> None:
        self.path = path
        # Unreplicated (``--replica none``), nobody else checkpoints: let SQLite do it every
        # 1000 pages, or the WAL grows ~10 KB a registration for as long as central runs.
        self._autocheckpoint_pages = 0 if replicated else 1000
        self._writer_pool: ThreadPoolExecutor | None = None
        self._reader_pool: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._local = threading.local()
        self._pending: list[tuple[WriteFn, asyncio.Future[Any]]] = []
        self._wakeup: asyncio.Event | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._closing = False
        self._listeners: list[Listener] = []
        # Events of batches committed by the writer thread, not yet handed to the listeners.
        self._committed: list[dict[str, Any]] = []
        # Chain state as committed: the last event's revision, hash and time.
        self._revision = 0
        self._hash = audit.GENESIS_HASH
        self._last_at = ""

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        """Create the directory, open and migrate the database, start the writer.

        Raises :class:`modelreg.central.schema.SchemaTooNew` for a database of a newer release and
        ``sqlite3.Error`` / ``OSError`` when the file cannot be opened.
        """
        loop = asyncio.get_running_loop()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="registry-writer")
        self._reader_pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="registry-read")
        try:
            await loop.run_in_executor(self._writer_pool, self._open_writer)
        except BaseException:
            self._writer_pool.shutdown(wait=True)
            self._reader_pool.shutdown(wait=True)
            self._writer_pool = self._reader_pool = None
            raise
        self._closing = False
        self._wakeup = asyncio.Event()
        self._writer_task = asyncio.create_task(self._write_loop(), name="registry-writer")

    async def close(self) -> None:
        """Finish queued writes and reads in flight, then close every connection.

        Writes and reads asked for meanwhile raise :class:`Unavailable`. Never checkpoints
        (SQLite may, as the last connection closes: see the module docstring).
        """
        if self._writer_pool is None:
            return
        self._closing = True
        loop = asyncio.get_running_loop()
        reader_pool, self._reader_pool = self._reader_pool, None
        if self._wakeup is not None:
            self._wakeup.set()
        if self._writer_task is not None:
            await self._writer_task
            self._writer_task = None
        if reader_pool is not None:
            # Waits for reads in flight, in a thread: the loop keeps serving meanwhile.
            await loop.run_in_executor(None, reader_pool.shutdown, True)
        writer_pool, self._writer_pool = self._writer_pool, None
        await loop.run_in_executor(writer_pool, self._close_connections)
        writer_pool.shutdown(wait=True)

    @property
    def revision(self) -> int:
        """The revision of the last committed event (0 for an empty registry)."""
        return self._revision

    @property
    def revision_hash(self) -> str:
        """The chain hash of :attr:`revision` (the genesis hash for an empty registry)."""
        return self._hash

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(events)`` on the event loop after each commit that wrote events.

        A listener must be quick and must not raise (what it raises is logged and ignored).
        """
        self._listeners.append(listener)

    # -- writing -------------------------------------------------------------------------

    async def write(self, fn: Callable[[sqlite3.Connection, WriteContext], T]) -> T:
        """Run ``fn(conn, ctx)`` in a write transaction; return its result after COMMIT.

        ``fn`` appends its event with ``ctx.append_event``. Whatever ``fn`` raises is raised
        here and none of its changes remain. Raises :class:`Unavailable` when the store is
        closed or closing, or when the database fails (disk full, I/O error).
        """
        if self._closing or self._wakeup is None:
            raise Unavailable("the registry is not open")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((fn, future))
        self._wakeup.set()
        return await future

    async def _write_loop(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._pending[:MAX_BATCH]
            del self._pending[:MAX_BATCH]
            try:
                outcomes = await loop.run_in_executor(
                    self._writer_pool, self._run_batch, [fn for fn, _ in batch]
                )
            except BaseException as exc:  # the writer must outlive any one batch
                log.exception("registry write batch failed")
                failure = Unavailable("the registry database failed")
                failure.__cause__ = exc
                outcomes = [(False, failure)] * len(batch)
                if isinstance(exc, asyncio.CancelledError):
                    self._publish()
                    self._settle(batch, outcomes)
                    raise
            self._publish()
            self._settle(batch, outcomes)

    def _publish(self) -> None:
        events, self._committed = self._committed, []
        if not events:
            return
        for listener in self._listeners:
            try:
                listener(events)
            except Exception:  # a listener never fails a write
                log.exception("commit listener %r failed", listener)

    @staticmethod
    def _settle(batch: list[tuple[WriteFn, asyncio.Future[Any]]], outcomes: list[_Outcome]) -> None:
        for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
            if future.done():  # the caller went away; the write stands or not all the same
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def _run_batch(self, fns: list[WriteFn]) -> list[_Outcome]:
        """Writer thread: one transaction, one savepoint per write."""
        conn = self._conn
        assert conn is not None
        outcomes: list[_Outcome] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            # Read the chain's head inside the lock rather than trusting memory: costs one
            # indexed lookup per batch, and a second process writing the file (which the lease
            # should prevent) can then never fork the chain.
            self._reload_chain()
        except sqlite3.Error as exc:
            self._abort()
            return [(False, _db_failure(exc))] * len(fns)
        revision, last_hash, last_at = self._revision, self._hash, self._last_at
        events: list[dict[str, Any]] = []
        for index, fn in enumerate(fns):
            ctx = WriteContext(revision, last_hash, last_at)
            try:
                conn.execute("SAVEPOINT w")
                value = fn(conn, ctx)
                conn.execute("RELEASE w")
            except Exception as exc:
                failure = _db_failure(exc) if isinstance(exc, sqlite3.Error) else exc
                if not conn.in_transaction:
                    # SQLite aborted the whole transaction (I/O error, disk full): the writes
                    # before this one are lost with it and must not be acknowledged; the ones
                    # after it get a transaction of their own.
                    self._reload_chain()
                    lost = Unavailable("the registry database aborted the write; retry it")
                    return (
                        [(False, lost if ok else value) for ok, value in outcomes]
                        + [(False, failure)]
                        + (self._run_batch(fns[index + 1 :]) if index + 1 < len(fns) else [])
                    )
                try:
                    conn.execute("ROLLBACK TO w")
                    conn.execute("RELEASE w")
                except sqlite3.Error as undo:
                    self._abort()
                    return [(False, _db_failure(undo))] * len(fns)
                outcomes.append((False, failure))
                continue
            outcomes.append((True, value))
            if ctx.event is not None:
                revision, last_hash, last_at = ctx.revision, ctx.event["hash"], ctx.at
                events.append(ctx.event)
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._abort()
            return [(False, _db_failure(exc))] * len(fns)
        self._revision, self._hash, self._last_at = revision, last_hash, last_at
        self._committed.extend(events)
        return outcomes

    def _abort(self) -> None:
        conn = self._conn
        assert conn is not None
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("rollback failed")
        try:
            self._reload_chain()
        except sqlite3.Error:
            log.exception("reading the event chain's head failed")

    def _reload_chain(self) -> None:
        conn = self._conn
        assert conn is not None
        row = conn.execute(
            "SELECT revision, hash, at FROM events ORDER BY revision DESC LIMIT 1"
        ).fetchone()
        if row is None:
            self._revision, self._hash, self._last_at = 0, audit.GENESIS_HASH, ""
        else:
            self._revision, self._hash, self._last_at = int(row[0]), str(row[1]), str(row[2])

    def _open_writer(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            for pragma in _PRAGMAS:
                conn.execute(pragma)
            conn.execute(f"PRAGMA wal_autocheckpoint={self._autocheckpoint_pages}")
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._reload_chain()

    def _close_connections(self) -> None:
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for reader in readers:
            reader.close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- reading -------------------------------------------------------------------------

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on a read-only connection, in one snapshot; return its result.

        Whatever ``fn`` raises is raised here. Raises :class:`Unavailable` when the store is
        not open or the database cannot be read.
        """
        pool = self._reader_pool
        if pool is None:
            raise Unavailable("the registry is not open")
        return await asyncio.get_running_loop().run_in_executor(pool, self._run_read, fn)

    def _run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            conn = self._reader()
            conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise _db_failure(exc) from exc
        try:
            return fn(conn)
        except sqlite3.Error as exc:
            raise _db_failure(exc) from exc
        finally:
            try:
                conn.execute("COMMIT")
            except sqlite3.Error:
                log.exception("ending a read transaction failed")

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            uri = self.path.resolve().as_uri() + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            queries.install_functions(conn)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn


def _db_failure(exc: BaseException) -> RegistryError:
    """A driver error as an error fit for the wire (the driver's message is only logged)."""
    log.error("registry database error: %r", exc)
    if isinstance(exc, RegistryError):
        return exc
    failure = (
        Unavailable("the registry database is unavailable")
        if isinstance(exc, sqlite3.OperationalError)
        else RegistryError("internal error in the registry database")
    )
    failure.__cause__ = exc
    return failure
