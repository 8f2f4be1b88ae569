"""Central watches its own replica: a replica that lost its history, or holds a corrupt file, is
said (``/healthz``, ``/metrics``, an ERROR log line) and repaired.

Litestream keeps its position in memory. Delete the replica under a running central and
litestream 0.5.17 goes on uploading level-0 files onto nothing (measured: after ``rm -rf`` of
the replica the next sync wrote ``ltx/0/3-3.ltx`` alone, no snapshot, and every fresh restore
failed with "no matching backup files available") while ``lag`` stays 0 and ``errors`` 0. A
file corrupted in the replica is not noticed either: compaction builds level 1 from central's
local files, so only a node that reads the damaged file fails, and it retries forever.

So every ``replica_check_interval_s`` a :class:`ReplicaMonitor` lists each database's replica
(one LIST on S3, a directory walk for ``file://``, through :mod:`modelreg.objectstore`) and
checks, per database:

1. **History.** The files must restore to at least the TXID litestream confirmed uploading
   (read before the listing): a snapshot (level 9), or a chain from TXID 1, then files that
   continue it. Otherwise the replica lost its history (deleted, emptied, or replaced by an
   older copy): the monitor says so and **re-seeds** it (:meth:`Replicator.reseed
   <modelreg.central.replication.Replicator.reseed>`: litestream stopped, ``replicate -once
   -force-snapshot``, litestream started again), which writes a full snapshot at the current
   position. Sidecars following the replica continue: the snapshot extends their history.
2. **Level-0 files** are compared with central's own copies (litestream keeps the files it
   uploads in ``.<db>-litestream/ltx/0`` until they are compacted): an S3 ETag is the MD5 of a
   single-part upload, a ``file://`` replica is read. A file that differs is **repaired**: the
   local bytes are put back under its key.
3. **A restore drill** — ``litestream restore`` of the replica into a scratch file, as a fresh
   node would — runs when a snapshot or compacted file appeared that was not there, when an
   existing file changed (LTX files are immutable: a changed one was overwritten), after every
   repair, and at least every :data:`DRILL_INTERVAL_S`. A restore that fails (checksum
   mismatch, missing files) is a corrupt replica and is re-seeded; a restored registry whose
   event at its revision has another hash than central's (or a revision central never had) is a
   *diverged* replica: another history was written there. That is said, and re-seeded once;
   it stays reported until a drill agrees again.

Every problem is one ERROR line (``replica registry: lost its history ...``), the database's
``state`` in ``/healthz`` (``ok``, ``lost``, ``corrupt``, ``diverged``, ``unreachable``,
``unknown`` before the first check) with the top-level ``status`` ``degraded``, and the
``modelreg_central_replica_*`` metrics. An unreachable store is only ``unreachable``: that is an
outage, not a loss, and nothing is repaired into it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelreg.central.config import CentralConfig
from modelreg.central.replication import (
    ReplicationError,
    Replicator,
    litestream_env,
    litestream_path,
    remove_db_files,
    replica_url,
    restore_db,
)
from modelreg.objectstore import open_store

if TYPE_CHECKING:
    from obstore.store import ObjectStore

__all__ = [
    "DRILL_INTERVAL_S",
    "PROBLEMS",
    "ReplicaFile",
    "ReplicaMonitor",
    "parse_key",
    "render_metrics",
    "restorable_end",
]

log = logging.getLogger(__name__)

#: Longest time between two restore drills of one database, in seconds.
DRILL_INTERVAL_S = 3600.0
#: Seconds between two re-seeds of one database while a problem stays: doubling from the first
#: to the last (a re-seed that did not help is not repeated in a loop).
FIRST_RESEED_BACKOFF_S = 2.0
MAX_RESEED_BACKOFF_S = 300.0
#: Seconds before a problem is looked at again, and only then said and acted on.
CONFIRM_DELAY_S = 0.5
#: Level of litestream's snapshots.
SNAPSHOT_LEVEL = 9
#: ``ltx/<level>/<min>-<max>.ltx`` (file://) or ``<level as 4 hex digits>/<min>-<max>.ltx`` (S3).
_KEY = re.compile(r"(?:ltx/(\d+)|([0-9a-f]{4}))/([0-9a-f]{16})-([0-9a-f]{16})\.ltx$")

#: States of a database's replica, as /healthz shows them.
OK, LOST, CORRUPT, DIVERGED, UNREACHABLE, UNKNOWN = (
    "ok",
    "lost",
    "corrupt",
    "diverged",
    "unreachable",
    "unknown",
)
PROBLEMS = (LOST, CORRUPT, DIVERGED)


#: A problem: its kind, the message to log and report, and what repairs it.
_Verdict = tuple[str, str, Callable[[], Awaitable[None]]]


@dataclass(frozen=True)
class ReplicaFile:
    """One LTX file of a replica: its key (relative to the store), level and TXID range."""

    key: str
    level: int
    min_txid: int
    max_txid: int
    size: int
    etag: str | None = None
    modified: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.min_txid:016x}-{self.max_txid:016x}.ltx"

    @property
    def identity(self) -> tuple[int, str | None, float]:
        """What changes when the object is rewritten."""
        return self.size, self.etag, self.modified


def parse_key(key: str, meta: Mapping[str, Any] | None = None) -> ReplicaFile | None:
    """The :class:`ReplicaFile` of a listed key, None for anything that is not an LTX file."""
    match = _KEY.search(key)
    if match is None:
        return None
    level = int(match.group(1)) if match.group(1) is not None else int(match.group(2), 16)
    meta = meta or {}
    modified: Any = meta.get("last_modified")
    return ReplicaFile(
        key=key,
        level=level,
        min_txid=int(match.group(3), 16),
        max_txid=int(match.group(4), 16),
        size=int(meta.get("size") or 0),
        etag=str(meta["e_tag"]).strip('"') if meta.get("e_tag") else None,
        modified=float(modified.timestamp()) if hasattr(modified, "timestamp") else 0.0,
    )


def restorable_end(files: Iterable[ReplicaFile]) -> int | None:
    """The TXID a fresh restore of these files reaches, None when nothing restores.

    A restore starts from the latest snapshot (level 9), or without one from a file that begins
    at TXID 1, and applies files that continue the position (any level 0-8), largest step first.
    """
    files = list(files)
    snapshots = [f.max_txid for f in files if f.level == SNAPSHOT_LEVEL]
    steps = [f for f in files if f.level != SNAPSHOT_LEVEL]
    if snapshots:
        position = max(snapshots)
    elif any(f.min_txid == 1 for f in steps):
        position = 0
    else:
        return None
    while True:
        following = [f.max_txid for f in steps if f.min_txid <= position + 1 <= f.max_txid]
        if not following or max(following) <= position:
            return position
        position = max(following)


@dataclass
class _Database:
    """What the monitor knows of one database's replica."""

    name: str
    prefix: str
    local_l0: Path
    state: str = UNKNOWN
    problem: str | None = None
    checked_at: float | None = None
    restorable_txid: int | None = None
    files: int = 0
    #: key -> identity of every file seen at the last listing.
    seen: dict[str, tuple[int, str | None, float]] = field(default_factory=dict)
    #: level-0 keys (with identity) found equal to central's own copy.
    verified: set[tuple[str, tuple[int, str | None, float]]] = field(default_factory=set)
    last_drill: float = 0.0
    drill_due: bool = True
    #: Whether the last drill found the replica restorable and ours.
    drilled_ok: bool = False
    next_reseed: float = float("-inf")
    reseed_backoff: float = FIRST_RESEED_BACKOFF_S
    problems: dict[str, int] = field(default_factory=dict)
    #: The last problem found (kept once the replica is ok again), and when.
    last_problem: str | None = None
    last_problem_at: float | None = None
    reseeds: int = 0
    repairs: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "problem": self.problem,
            "checked_at": _iso(self.checked_at),
            "restorable_txid": self.restorable_txid,
            "files": self.files,
            "last_problem": self.last_problem,
            "last_problem_at": _iso(self.last_problem_at),
            "reseeds": self.reseeds,
            "repairs": self.repairs,
        }


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class ReplicaMonitor:
    """Checks one central's replica every ``config.replica_check_interval_s`` (see the module
    docstring); ``start()`` / ``stop()``; the constructor does no I/O.

    ``local_hash(revision)`` gives central's own event hash at a revision (None when it has no
    such revision). Nothing here raises into central: a failed check is logged and reported.
    """

    def __init__(
        self,
        config: CentralConfig,
        replicator: Replicator,
        local_hash: Callable[[int], Awaitable[str | None]],
        environ: Mapping[str, str],
    ) -> None:
        assert config.replica_url is not None
        self._config = config
        self._replicator = replicator
        self._local_hash = local_hash
        self._environ = dict(environ)
        self._store: ObjectStore | None = None
        self._task: asyncio.Task[None] | None = None
        self._checks = 0
        self._dbs = {
            name: _Database(
                name,
                name,
                config.data_dir / f".{name}.db-litestream" / "ltx" / "0",
            )
            for name in ("registry", "secrets")
        }

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start checking (the first check runs one interval after the start)."""
        if self._config.replica_check_interval_s > 0:
            self._task = asyncio.create_task(self._loop(), name="replica-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.replica_check_interval_s)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:  # the monitor must outlive any one check
                log.exception("replica check failed")

    # -- status --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """``{"state", "databases": {name: {...}}}``: the worst state of both databases first."""
        states = [db.state for db in self._dbs.values()]
        worst = next((s for s in PROBLEMS if s in states), None)
        state = worst or (UNREACHABLE if UNREACHABLE in states else states[0])
        if worst is None and all(s == OK for s in states):
            state = OK
        return {
            "state": state,
            "checks": self._checks,
            "databases": {name: db.as_dict() for name, db in self._dbs.items()},
        }

    def problem_counts(self) -> dict[tuple[str, str], int]:
        """(database, kind) -> how often that problem was found (for /metrics)."""
        return {
            (db.name, kind): count
            for db in self._dbs.values()
            for kind, count in db.problems.items()
        }

    def totals(self) -> dict[str, dict[str, int]]:
        """database -> {"reseeds", "repairs", "ok"} (for /metrics)."""
        return {
            db.name: {"reseeds": db.reseeds, "repairs": db.repairs, "ok": int(db.state == OK)}
            for db in self._dbs.values()
        }

    # -- one check -----------------------------------------------------------------------------

    async def check(self) -> None:
        """Check both databases once, repairing what can be repaired."""
        self._checks += 1
        for db in self._dbs.values():
            await self._check(db)

    def _open(self) -> ObjectStore:
        if self._store is None:
            assert self._config.replica_url is not None
            self._store = open_store(self._config.replica_url, self._environ)
        return self._store

    # obstore's blocking calls, each in a worker thread: its async API can abort the process
    # at interpreter exit (seen with obstore 0.12.1: SIGABRT after asyncio.run returned).

    def _list_sync(self, db: _Database) -> list[ReplicaFile]:
        import obstore

        items = obstore.list(self._open(), db.prefix + "/").collect()
        files = [parse_key(str(item["path"]), item) for item in items]
        return [f for f in files if f is not None]

    def _get_sync(self, key: str) -> bytes | None:
        import obstore

        try:
            return bytes(obstore.get(self._open(), key).bytes())
        except FileNotFoundError:
            return None

    def _put_sync(self, key: str, data: bytes) -> None:
        import obstore

        obstore.put(self._open(), key, data)

    async def _check(self, db: _Database) -> None:
        if self._replicator.confirmed_txid(db.name) is None:
            self._set(db, UNKNOWN, None)  # litestream has not reported an upload in this run
            return
        verdict = await self._assess(db)
        if verdict is not None:
            # Look again before saying anything: a listing or a read may race an upload or a
            # compaction; a real loss or a damaged file is still there a moment later.
            await asyncio.sleep(CONFIRM_DELAY_S)
            verdict = await self._assess(db)
        if verdict is None:
            return
        kind, message, action = verdict
        self._problem(db, kind, message)
        await action()

    async def _assess(self, db: _Database) -> _Verdict | None:
        """Look at the replica once; None when nothing is wrong (or it cannot be reached)."""
        confirmed = self._replicator.confirmed_txid(db.name)
        try:
            files = await asyncio.to_thread(self._list_sync, db)
        except Exception as exc:  # obstore raises its own families; any is "cannot list"
            self._set(db, UNREACHABLE, f"cannot list the replica: {_short(exc)}")
            return None
        db.checked_at = time.time()
        db.files = len(files)
        end = restorable_end(files)
        db.restorable_txid = end
        if confirmed is not None and (end is None or end < confirmed):
            what = (
                "no snapshot and no file from TXID 1"
                if end is None
                else f"its files restore to TXID {end}, litestream uploaded up to {confirmed}"
            )
            message = f"lost its history ({what}); re-seeding with a full snapshot"
            return LOST, message, lambda: self._reseed(db)
        changed = self._changes(db, files)
        damaged = await self._verify_level0(db, files)
        if damaged:
            message = (
                f"{len(damaged)} level-0 file(s) differ from what central uploaded "
                f"({', '.join(k for k, _ in damaged[:3])}); putting them back from central's copy"
            )
            return CORRUPT, message, lambda: self._repair(db, damaged)
        now = time.monotonic()
        if changed or db.drill_due or now - db.last_drill > DRILL_INTERVAL_S:
            return await self._drill(db)
        if db.state not in PROBLEMS or db.drilled_ok:
            self._set(db, OK, None)
        return None

    def _changes(self, db: _Database, files: list[ReplicaFile]) -> bool:
        """Record the listing; True when a snapshot is new, or a known file was rewritten."""
        changed = False
        current = {f.key: f.identity for f in files}
        for f in files:
            before = db.seen.get(f.key)
            if before is not None and before != f.identity:
                log.warning("replica %s: %s was rewritten (LTX files never change)", db.name, f.key)
                changed = True
            elif before is None and f.level == SNAPSHOT_LEVEL and db.seen:
                changed = True
        db.seen = current
        return changed

    async def _verify_level0(
        self, db: _Database, files: list[ReplicaFile]
    ) -> list[tuple[str, bytes]]:
        """Level-0 files that differ from central's own copies: ``(key, central's bytes)``."""
        damaged: list[tuple[str, bytes]] = []
        for f in files:
            if f.level != 0 or (f.key, f.identity) in db.verified:
                continue
            try:
                expected = await asyncio.to_thread((db.local_l0 / f.name).read_bytes)
            except FileNotFoundError:
                continue  # compacted and dropped locally: a higher level holds it now
            # S3's ETag of a single-part upload is the MD5 of the object: no GET needed
            if f.etag == hashlib.md5(expected, usedforsecurity=False).hexdigest():
                db.verified.add((f.key, f.identity))
                continue
            got = await asyncio.to_thread(self._get_sync, f.key)
            if got is None or got == expected:  # None: compacted away since the listing
                db.verified.add((f.key, f.identity))
            else:
                damaged.append((f.key, expected))
        return damaged

    async def _repair(self, db: _Database, damaged: list[tuple[str, bytes]]) -> None:
        db.drill_due = True
        for key, data in damaged:
            try:
                await asyncio.to_thread(self._put_sync, key, data)
            except Exception as exc:
                log.error("replica %s: cannot put %s back: %s", db.name, key, _short(exc))
                continue
            db.repairs += 1
            log.warning("replica %s: put %s back from central's copy", db.name, key)

    async def _drill(self, db: _Database) -> _Verdict | None:
        """Restore the replica as a fresh node would and compare it with central's history."""
        db.last_drill = time.monotonic()
        db.drill_due = False
        db.drilled_ok = False
        try:
            head = await self._restore_head(db)
        except ReplicationError as exc:
            message = _short(exc)
            lowered = message.lower()
            if "checksum" in lowered or "decode" in lowered or "corrupt" in lowered:
                kind = CORRUPT
            elif any(word in lowered for word in _MISSING):
                kind = LOST
            else:  # connection refused, timeouts, DNS: an outage, not a damaged replica
                self._set(db, UNREACHABLE, f"restore drill: {message}")
                db.drill_due = True
                return None
            db.drill_due = True
            return kind, f"a fresh restore fails ({message}); re-seeding", lambda: self._reseed(db)
        if db.name == "registry" and head is not None and head[0]:
            revision, digest = head
            ours = await self._local_hash(revision)
            if ours != digest:
                db.drill_due = True
                message = (
                    f"holds another history: its revision {revision} has hash "
                    f"{(digest or '')[:12]}, central's {'none' if ours is None else ours[:12]}; "
                    "re-seeding"
                )
                return DIVERGED, message, lambda: self._reseed(db)
        db.drilled_ok = True
        self._set(db, OK, None)
        return None

    async def _restore_head(self, db: _Database) -> tuple[int, str | None] | None:
        """Restore the replica into a scratch file as a fresh node would: the registry's
        ``(revision, hash)``, ``(0, None)`` for the secrets database. Raises
        :class:`ReplicationError` when the restore fails (an empty replica is one too)."""
        assert self._config.replica_url is not None
        url = replica_url(self._config.replica_url, db.name)
        scratch = self._config.data_dir / f".replica-drill-{db.name}.db"
        binary = litestream_path(self._config)
        try:
            if not await restore_db(binary, url, scratch, litestream_env(self._environ)):
                raise ReplicationError(f"cannot restore {url}: no matching backup files")
            if db.name != "registry":
                return 0, None
            return await asyncio.to_thread(_head, scratch)
        finally:
            await asyncio.to_thread(remove_db_files, scratch)

    async def _reseed(self, db: _Database) -> None:
        now = time.monotonic()
        if now < db.next_reseed:
            return  # the last re-seed was moments ago: give it time, then try again
        db.reseeds += 1
        db.next_reseed = now + db.reseed_backoff
        db.reseed_backoff = min(MAX_RESEED_BACKOFF_S, db.reseed_backoff * 2)
        db.drill_due = True
        db.verified.clear()
        db.seen.clear()  # the re-seed re-uploads files under their names: not a rewrite
        try:
            await self._replicator.reseed()
        except Exception as exc:
            log.error("replica %s: re-seed failed: %s", db.name, _short(exc))

    def _problem(self, db: _Database, kind: str, message: str) -> None:
        db.problems[kind] = db.problems.get(kind, 0) + 1
        db.last_problem, db.last_problem_at = f"{kind}: {message}", time.time()
        log.error("replica %s: %s", db.name, message)
        self._set(db, kind, message)

    def _set(self, db: _Database, state: str, problem: str | None) -> None:
        if db.state in PROBLEMS and state == OK:
            log.info("replica %s: ok again", db.name)
            db.reseed_backoff = FIRST_RESEED_BACKOFF_S
        db.state, db.problem = state, problem


def render_metrics(replicator: Replicator | None, monitor: ReplicaMonitor | None) -> str:
    """Replication series for /metrics (text format), empty without replication:

    ``modelreg_central_replica_ok{database}`` (1: the last check found the replica intact),
    ``_replica_problems_total{database,kind}`` (kind ``lost``, ``corrupt``, ``diverged``),
    ``_replica_reseeds_total{database}``, ``_replica_repairs_total{database}``,
    ``_replica_restorable_txid{database}``, ``_replication_lag{database}`` (TXIDs not yet in the
    replica), ``_replication_errors_total{database}`` (litestream error lines),
    ``_replicated_acks_total`` / ``_replicated_ack_failures_total`` (``wait=replicated``).
    """
    if replicator is None:
        return ""
    out: list[str] = []
    p = "modelreg_central_"

    def header(name: str, kind: str, text: str) -> None:
        out.append(f"# HELP {p}{name} {text}")
        out.append(f"# TYPE {p}{name} {kind}")

    status = replicator.status()["databases"]
    totals = monitor.totals() if monitor is not None else {}
    if monitor is not None:
        header("replica_ok", "gauge", "1 when the last check found the replica intact.")
        for name, values in totals.items():
            out.append(f'{p}replica_ok{{database="{name}"}} {values["ok"]}')
        header("replica_problems_total", "counter", "Replica problems found, by kind.")
        counts = monitor.problem_counts()
        for name in totals:
            for kind in PROBLEMS:
                n = counts.get((name, kind), 0)
                out.append(f'{p}replica_problems_total{{database="{name}",kind="{kind}"}} {n}')
        for metric, text in (("reseeds", "Full snapshots written"), ("repairs", "Files put back")):
            header(f"replica_{metric}_total", "counter", f"{text} to repair the replica.")
            for name, values in totals.items():
                out.append(f'{p}replica_{metric}_total{{database="{name}"}} {values[metric]}')
        header("replica_restorable_txid", "gauge", "TXID a fresh restore of the replica reaches.")
        for name, db in monitor.status()["databases"].items():
            out.append(
                f'{p}replica_restorable_txid{{database="{name}"}} {db["restorable_txid"] or 0}'
            )
    header("replication_lag", "gauge", "Local TXIDs not yet in the replica.")
    for name, db in status.items():
        out.append(f'{p}replication_lag{{database="{name}"}} {db["lag"] or 0}')
    header("replication_errors_total", "counter", "Error lines litestream logged.")
    for name, db in status.items():
        out.append(f'{p}replication_errors_total{{database="{name}"}} {db["errors"]}')
    barriers = replicator.barriers.values()
    header("replicated_acks_total", "counter", "Writes acknowledged once replicated.")
    out.append(f"{p}replicated_acks_total {sum(b.confirmed for b in barriers)}")
    header(
        "replicated_ack_failures_total", "counter", "Replicated acknowledgements that timed out."
    )
    out.append(f"{p}replicated_ack_failures_total {sum(b.failures for b in barriers)}")
    return "\n".join(out) + "\n"


#: Words of a failed restore that mean files are missing, not that the store is unreachable.
_MISSING = ("no matching backup", "no snapshot", "not found", "no such file", "missing", "txid")


def _head(path: Path) -> tuple[int, str | None]:
    """``(revision, hash)`` of the last event of a registry file."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT revision, hash FROM events ORDER BY revision DESC LIMIT 1")
        found = row.fetchone()
        return (0, None) if found is None else (int(found[0]), str(found[1]))
    finally:
        conn.close()


def _short(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    return text.splitlines()[0][:300]
