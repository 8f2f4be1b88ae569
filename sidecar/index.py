"""The in-memory index: every answer of a registry.db copy, pre-encoded, immutable.

:func:`read_head` and :func:`load` each open the copy through one short-lived read-only
connection (``file:...?mode=ro``) and close it before returning: a long-lived connection would
block ``litestream restore -f`` from applying changes (docs/ARCHITECTURE.md, "Replication and its
pitfalls"). A load builds a new :class:`Index`; the server swaps the reference atomically, so a
lookup never sees a half-built index and never waits for a load.

Answers are stored as :func:`modelreg.sidecar.protocol.ok_prefix` bytes (``ok``, ``result``,
``revision`` and the ``age_ms`` key already encoded); a lookup appends the age and the ``id``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from modelreg.central.records import (
    TIME_FORMAT,
    VERSION_COLUMNS,
    VERSION_SELECT,
    model_record,
    version_record,
)
from modelreg.errors import (
    AliasNotFound,
    ModelNotFound,
    NotFound,
    RegistryError,
    Unavailable,
    VersionNotFound,
)
from modelreg.sidecar.protocol import _OK_RESULT, ok_entry, pack, revision_tail

__all__ = [
    "HASH_WINDOW",
    "INCREMENTAL_MAX_EVENTS",
    "Head",
    "Index",
    "IndexError_",
    "Probe",
    "RecentHashes",
    "build_list_entry",
    "load",
    "probe",
    "read_head",
]

_BUSY_TIMEOUT_S = 2.0


class IndexError_(Unavailable):
    """The copy cannot be read (missing, locked for too long, corrupt or not a registry)."""


@dataclass(frozen=True, slots=True)
class Head:
    """What changes most often in a copy: its revision and its replicated heartbeat."""

    revision: int
    #: Replicated heartbeat time, epoch milliseconds; None when central never wrote one.
    heartbeat_ms: int | None


#: How many of the newest revisions an index keeps the event hash of (for ``revision_hash``).
HASH_WINDOW = 16_384
_HASH_PREFIX_BYTES = 8


@dataclass(frozen=True, slots=True)
class RecentHashes:
    """The first 8 bytes of the event hash of each of the newest revisions of a history:
    revisions ``first`` to :attr:`last`, at most :data:`HASH_WINDOW` of them (128 KiB).

    A resolve with ``min_revision`` and ``revision_hash`` is answered only from a history
    holding that very event at that revision (after a loss central issues revision numbers
    again, to other events: docs/OPERATIONS.md, "Durability"). Eight bytes tell two events
    apart with a chance of 2**-64 of a collision.
    """

    first: int = 1
    data: bytes = b""

    @property
    def last(self) -> int:
        """The newest revision kept (``first - 1`` when empty)."""
        return self.first + len(self.data) // _HASH_PREFIX_BYTES - 1

    def get(self, revision: int) -> bytes | None:
        """The hash prefix of ``revision``'s event, None outside the window."""
        if not self.first <= revision <= self.last:
            return None
        start = (revision - self.first) * _HASH_PREFIX_BYTES
        return self.data[start : start + _HASH_PREFIX_BYTES]


def hash_prefix(digest: str) -> bytes:
    """What :class:`RecentHashes` keeps of an event hash (hex)."""
    return bytes.fromhex(digest[: 2 * _HASH_PREFIX_BYTES])


def _recent_hashes(
    conn: sqlite3.Connection, previous: Index | None, head: Head, extends: bool
) -> RecentHashes:
    """The newest :data:`HASH_WINDOW` event hashes at ``head``: those of ``previous`` and the
    events after it when the copy extends its history, else read afresh (one indexed scan)."""
    kept = previous.hashes if previous is not None and extends else None
    if (
        previous is not None
        and kept is not None
        and kept.data
        and kept.last == previous.revision <= head.revision
    ):
        first, data = kept.first, kept.data + _prefixes(conn, kept.last + 1)
    else:
        first = max(1, head.revision - HASH_WINDOW + 1)
        data = _prefixes(conn, first)
    extra = len(data) // _HASH_PREFIX_BYTES - HASH_WINDOW
    if extra > 0:
        first, data = first + extra, data[extra * _HASH_PREFIX_BYTES :]
    return RecentHashes(first, data)


def _prefixes(conn: sqlite3.Connection, first: int) -> bytes:
    """The hash prefixes of every event from revision ``first`` on, in revision order."""
    rows = conn.execute(
        f"SELECT substr(hash, 1, {2 * _HASH_PREFIX_BYTES}) FROM events WHERE revision >= ?"
        " ORDER BY revision",
        (first,),
    ).fetchall()
    return bytes.fromhex("".join(row[0] for row in rows))


@dataclass(frozen=True, slots=True)
class Index:
    """One immutable snapshot of the registry, every answer pre-encoded.

    ``resolve`` maps ``(model, ref)`` -> answer entry (:func:`modelreg.sidecar.protocol.ok_entry`),
    where ``ref`` is an alias, a version number in decimal, or ``latest``; ``get`` maps a model
    name -> its entry. Entries carry no revision (``tail`` does), so an entry that did not
    change is the same bytes object in consecutive indexes: a reload re-encodes only the
    models that changed.
    """

    revision: int
    heartbeat_ms: int | None
    resolve: dict[tuple[str, str], bytes]
    get: dict[str, bytes]
    list_entry: bytes
    #: ``revision_tail(revision)``: appended to every entry.
    tail: bytes
    models: int
    versions: int
    #: Wall-clock time of the load, epoch seconds.
    loaded_at: float
    load_ms: float
    #: The copy it was loaded from.
    path: str
    #: Hash of the event at ``revision``: a later copy that has the same hash there continues
    #: this history, so it can be loaded incrementally.
    last_hash: str = ""
    #: True when built from a previous index by re-encoding only the changed models.
    incremental: bool = False
    #: False when :func:`load` was given a ``previous`` index whose history this copy does not
    #: continue (a lower revision, or another event at ``previous.revision``: a replaced or
    #: rewound central). The follower never serves such an index unasked (issue 18, finding 2).
    extends_previous: bool = True
    #: The event hashes of the newest revisions (checked by ``revision_hash``).
    hashes: RecentHashes = field(default_factory=RecentHashes)
    #: Per model: its record (for ``get``/``list``), its resolve keys, its version count.
    model_records: dict[str, dict[str, Any]] = field(default_factory=dict)
    model_keys: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    version_counts: dict[str, int] = field(default_factory=dict)

    def not_found(self, model: str, ref: str | None = None) -> RegistryError:
        """The error for a lookup that missed (which of model, version or alias is absent)."""
        if model not in self.get:
            return ModelNotFound(f"no model named {model!r}", model=model)
        if ref is None:
            return NotFound(f"nothing found for {model!r}", model=model)
        if ref.isascii() and ref.isdigit():
            return VersionNotFound(
                f"model {model!r} has no version {int(ref)}", model=model, version=int(ref)
            )
        if ref == "latest":
            return VersionNotFound(
                f"model {model!r} has no version that is not archived", model=model, ref=ref
            )
        return AliasNotFound(f"model {model!r} has no alias {ref!r}", model=model, alias=ref)


def _connect(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise IndexError_(f"no local copy at {path}", path=str(path))
    try:
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=_BUSY_TIMEOUT_S
        )
    except sqlite3.Error as exc:
        raise IndexError_(f"cannot open {path}: {exc}", path=str(path)) from None
    return conn


def _epoch_ms(text: str | None) -> int | None:
    if not text:
        return None
    try:
        moment = datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(moment.timestamp() * 1000)


def _head(conn: sqlite3.Connection) -> Head:
    revision = conn.execute("SELECT COALESCE(MAX(revision), 0) FROM events").fetchone()[0]
    row = conn.execute("SELECT at FROM heartbeat WHERE id = 1").fetchone()
    return Head(int(revision), _epoch_ms(row[0]) if row else None)


def read_head(path: Path) -> Head:
    """The revision and heartbeat of the copy at ``path`` (one tiny read, then closed).

    Raises :class:`IndexError_` when the file is missing, busy beyond a short timeout, or not a
    registry database.
    """
    conn = _connect(path)
    try:
        return _head(conn)
    except sqlite3.Error as exc:
        raise IndexError_(f"cannot read {path}: {exc}", path=str(path)) from None
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class Probe:
    """A copy's head and which history it holds, read without loading it."""

    revision: int
    heartbeat_ms: int | None
    #: Hash of the event at ``revision`` ("" without events).
    last_hash: str
    #: Hash of the event at the revision asked about ("" when the copy has no such event).
    hash_at: str

    def extends(self, revision: int, last_hash: str) -> bool:
        """Whether this copy continues the history whose event at ``revision`` has hash
        ``last_hash``: it is at least there and holds that very event (a history without
        events, revision 0, is continued by anything)."""
        if revision == 0:
            return True
        return self.revision >= revision and self.hash_at == last_hash


def probe(path: Path, at_revision: int) -> Probe:
    """The head of the copy at ``path`` and the hash of its event at ``at_revision`` (one tiny
    read transaction, then closed). Raises :class:`IndexError_` as :func:`read_head` does."""
    conn = _connect(path)
    try:
        conn.execute("BEGIN")
        head = _head(conn)
        return Probe(
            head.revision,
            head.heartbeat_ms,
            _event_hash(conn, head.revision),
            _event_hash(conn, at_revision) if at_revision else "",
        )
    except sqlite3.Error as exc:
        raise IndexError_(f"cannot read {path}: {exc}", path=str(path)) from None
    finally:
        conn.close()


_ENCODE = msgspec.msgpack.Encoder().encode
_decode_json = msgspec.json.Decoder().decode


class _Artifact(msgspec.Struct, gc=False):
    uri: Any
    sha256: Any
    size: Any
    format: Any


class _Lineage(msgspec.Struct, gc=False):
    run_id: Any
    commit: Any
    dataset_uri: Any
    dataset_digest: Any
    parent_version: Any


class _Decision(msgspec.Struct, gc=False):
    status: Any
    by: Any
    at: Any
    comment: Any


class _Archived(msgspec.Struct, gc=False):
    by: Any
    at: Any
    reason: Any


class _Version(msgspec.Struct, gc=False):
    """:func:`modelreg.central.records.version_record`'s keys in its order, plus ``ref``."""

    model: Any
    version: Any
    status: Any
    artifact: _Artifact
    lineage: _Lineage
    params: dict[str, Any]
    metrics: dict[str, Any]
    tags: dict[str, Any]
    description: Any
    created_by: Any
    created_at: Any
    decision: _Decision | None
    archived: _Archived | None
    aliases: list[str]
    ref: str


# _encode unpacks VERSION_SELECT rows by position into these structs: fail at import, not
# with wrong answers, if modelreg.central.records changes its columns or its record.
assert len(VERSION_COLUMNS) == 25, VERSION_COLUMNS
assert (*version_record(("",) * 25), "ref") == _Version.__struct_fields__, "record keys moved"


class _JsonObjects:
    """``json.loads`` of the JSON-object columns, memoised by text for one load.

    Many versions carry identical params, metrics or tags (``{}`` above all), so decoding
    each distinct text once is most of the load time saved. Same rules as
    ``modelreg.central.records``: anything but a JSON object reads as ``{}``. The decoded objects
    are shared between records and never mutated (they are only packed).
    """

    def __init__(self) -> None:
        #: Text -> decoded object, for every text decoded so far.
        self.seen: dict[str, dict[str, Any]] = {}

    def __call__(self, text: str | None) -> dict[str, Any]:
        if not text:
            return {}
        found = self.seen.get(text)
        if found is None:
            try:
                value = _decode_json(text)
            except (msgspec.DecodeError, TypeError):
                try:  # what msgspec refuses and json accepts: NaN, Infinity
                    value = json.loads(text)
                except (ValueError, TypeError):
                    value = None
            found = value if isinstance(value, dict) else {}
            self.seen[text] = found
        return found


#: Above this many events since the previous index, a full load is cheaper than tracking.
INCREMENTAL_MAX_EVENTS = 5000
#: Model names per ``IN (...)`` query of an incremental load.
_IN_CHUNK = 500


def load(path: Path, previous: Index | None = None) -> Index:
    """Read the copy at ``path`` into a new :class:`Index`.

    With ``previous`` (the index being served), when the copy continues its history (the event
    at ``previous.revision`` has the same hash) and few events happened since, only the models
    those events name are re-read and re-encoded; every other entry is shared with
    ``previous``. Otherwise everything is read (about a second per 100k versions), and
    :attr:`Index.extends_previous` says whether the copy continues ``previous`` at all.

    CPU-bound: call it in a worker thread. The followed file is held only for milliseconds
    (the few rows of an incremental load, or SQLite's backup API copying it to a private
    scratch file for a full load), and every connection is closed on every path before this
    returns or raises: the sidecar pauses and freezes the cyclic garbage collector, and a
    ``sqlite3.Connection`` sits in a reference cycle (with its statement cache), so one left
    to the collector stays open for good and blocks litestream's apply (issue 18, finding 1).
    Raises :class:`IndexError_` as :func:`read_head` does.
    """
    started = time.perf_counter()
    built = _Built()
    scratch: str | None = None
    conn = _connect(path)
    try:
        # An incremental load reads the few changed models straight from the copy, inside one
        # short read transaction (milliseconds).
        conn.execute("BEGIN")
        head = _head(conn)
        last_hash = _event_hash(conn, head.revision)
        extends = _extends(conn, previous, head)
        changed = _changed_models(conn, previous, head) if extends else None
        if previous is not None and changed is not None:
            if head.revision == previous.revision:
                # Nothing new (a cold start from the saved index of this very copy).
                hashes = _recent_hashes(conn, previous, head, extends)
                return dataclasses.replace(
                    previous,
                    hashes=hashes,
                    heartbeat_ms=head.heartbeat_ms,
                    path=str(path),
                    loaded_at=time.time(),
                    load_ms=(time.perf_counter() - started) * 1000,
                    incremental=True,
                    extends_previous=True,
                )
            names = sorted(changed)
            for i in range(0, len(names), _IN_CHUNK):
                _encode(conn, names[i : i + _IN_CHUNK], built)
            hashes = _recent_hashes(conn, previous, head, extends)
        conn.execute("COMMIT")
        if changed is None:
            # A full load: copy the file with SQLite's backup API (a consistent snapshot, page
            # copies only) into a private scratch file beside it and close the copy at once,
            # so litestream's apply never waits for the encoding. A file rather than
            # ":memory:" keeps the snapshot out of the process's RSS.
            fd, scratch = tempfile.mkstemp(prefix=".load-", suffix=".db", dir=path.parent)
            os.close(fd)
            target = sqlite3.connect(scratch, isolation_level=None)
            try:
                target.execute("PRAGMA journal_mode=OFF")
                target.execute("PRAGMA synchronous=OFF")
                conn.backup(target)
            finally:
                target.close()
    except (sqlite3.Error, OSError) as exc:
        if scratch is not None:
            Path(scratch).unlink(missing_ok=True)
        raise IndexError_(f"cannot load {path}: {exc}", path=str(path)) from None
    except BaseException:
        if scratch is not None:
            Path(scratch).unlink(missing_ok=True)
        raise
    finally:
        conn.close()  # whatever happened above: see the docstring

    if scratch is not None:
        try:
            snapshot = sqlite3.connect(scratch, isolation_level=None)
            try:
                head = _head(snapshot)
                last_hash = _event_hash(snapshot, head.revision)
                extends = _extends(snapshot, previous, head)
                _encode(snapshot, None, built)
                hashes = _recent_hashes(snapshot, previous, head, extends)
            finally:
                snapshot.close()
        except sqlite3.Error as exc:
            raise IndexError_(f"cannot load {path}: {exc}", path=str(path)) from None
        finally:
            Path(scratch).unlink(missing_ok=True)

    if changed is None or previous is None:
        resolve, get = built.resolve, built.get
        records, keys, counts = built.model_records, built.model_keys, built.version_counts
    else:
        resolve = dict(previous.resolve)
        get = dict(previous.get)
        records = dict(previous.model_records)
        keys = dict(previous.model_keys)
        counts = dict(previous.version_counts)
        for name in changed:
            for key in keys.pop(name, ()):
                del resolve[key]
            get.pop(name, None)
            records.pop(name, None)
            counts.pop(name, None)
        resolve.update(built.resolve)
        get.update(built.get)
        records.update(built.model_records)
        keys.update(built.model_keys)
        counts.update(built.version_counts)
    list_entry = build_list_entry(get)
    return Index(
        revision=head.revision,
        heartbeat_ms=head.heartbeat_ms,
        resolve=resolve,
        get=get,
        list_entry=list_entry,
        tail=revision_tail(head.revision),
        models=len(records),
        versions=sum(counts.values()),
        loaded_at=time.time(),
        load_ms=(time.perf_counter() - started) * 1000,
        path=str(path),
        last_hash=last_hash,
        incremental=changed is not None,
        extends_previous=extends,
        hashes=hashes,
        model_records=records,
        model_keys=keys,
        version_counts=counts,
    )


_ITEMS_KEY = b"\x81" + pack("items")


def build_list_entry(get: dict[str, bytes]) -> bytes:
    """The ``list`` answer entry, ``{"items": [model record, ...]}`` sorted by name, spliced
    from the ``get`` entries (a byte join, not a re-encoding: no long GIL hold on reload)."""
    skip = len(_OK_RESULT)
    count = len(get)
    if count < 16:
        header = bytes([0x90 | count])
    elif count < 2**16:
        header = b"\xdc" + count.to_bytes(2, "big")
    else:
        header = b"\xdd" + count.to_bytes(4, "big")
    return b"".join([_OK_RESULT, _ITEMS_KEY, header, *(get[name][skip:] for name in sorted(get))])


def _event_hash(conn: sqlite3.Connection, revision: int) -> str:
    row = conn.execute("SELECT hash FROM events WHERE revision = ?", (revision,)).fetchone()
    return str(row[0]) if row else ""


def _extends(conn: sqlite3.Connection, previous: Index | None, head: Head) -> bool:
    """Whether the copy continues the history ``previous`` was loaded from: it is at least at
    ``previous.revision`` and holds the same event there (same hash). An index without events
    (revision 0) is continued by anything; no ``previous`` means nothing to continue."""
    if previous is None or previous.revision == 0:
        return True
    if head.revision < previous.revision:
        return False
    return _event_hash(conn, previous.revision) == previous.last_hash


def _changed_models(
    conn: sqlite3.Connection, previous: Index | None, head: Head
) -> set[str] | None:
    """The models named by the events since ``previous`` (whose history the copy continues,
    see :func:`_extends`), or None when a full load is due."""
    if previous is None or not previous.last_hash:
        return None
    subjects = conn.execute(
        "SELECT subject FROM events WHERE revision > ? LIMIT ?",
        (previous.revision, INCREMENTAL_MAX_EVENTS + 1),
    ).fetchall()
    if len(subjects) > INCREMENTAL_MAX_EVENTS:
        return None
    # Subjects are "model", "model/3" or "model@alias"; model names hold neither "/" nor "@".
    return {str(subject).split("/", 1)[0].split("@", 1)[0] for (subject,) in subjects}


class _Built:
    """What :func:`_encode` produces, for all models or a subset."""

    def __init__(self) -> None:
        self.resolve: dict[tuple[str, str], bytes] = {}
        self.get: dict[str, bytes] = {}
        self.model_records: dict[str, dict[str, Any]] = {}
        self.model_keys: dict[str, tuple[tuple[str, str], ...]] = {}
        self.version_counts: dict[str, int] = {}


def _encode(conn: sqlite3.Connection, only: list[str] | None, out: _Built) -> None:
    """Encode every answer of the models named in ``only`` (None: every model) into ``out``."""
    where, args = (
        ("", ())
        if only is None
        else (
            f" WHERE m.name IN ({', '.join('?' * len(only))})",
            tuple(only),
        )
    )
    conn.row_factory = sqlite3.Row
    model_rows = conn.execute(
        "SELECT * FROM models m" + where + " ORDER BY m.name", args
    ).fetchall()
    conn.row_factory = None
    alias_rows = conn.execute(
        "SELECT m.name, a.name, a.version FROM aliases a JOIN models m ON m.id = a.model_id"
        + where,
        args,
    ).fetchall()
    latest_rows = conn.execute(
        "SELECT m.name, MAX(v.version) FROM versions v JOIN models m ON m.id = v.model_id"
        + (where + " AND" if where else " WHERE")
        + " v.status != 'archived' GROUP BY m.name",
        args,
    ).fetchall()
    # One str object per model name, shared by every key of that model.
    names: dict[str, str] = {row["name"]: row["name"] for row in model_rows}
    by_model: dict[str, dict[str, int]] = {}
    extra_refs: dict[tuple[str, int], list[str]] = {}
    for model, alias, version in alias_rows:
        by_model.setdefault(model, {})[alias] = version
        extra_refs.setdefault((model, version), []).append(alias)
    latest_number = dict(latest_rows)
    for model, version in latest_rows:
        extra_refs.setdefault((model, version), []).append("latest")
    latest_records: dict[str, dict[str, Any]] = {}
    keys: dict[str, list[tuple[str, str]]] = {name: [] for name in names}

    resolve = out.resolve
    counts = out.version_counts
    encode = _ENCODE
    decode = _JsonObjects()
    seen = decode.seen.get  # the memo, read inline: a method call per column cost ~0.1 s
    no_aliases: list[str] = []
    current = None  # the model of the previous row (rows come ordered by model)
    model = ""
    model_keys: list[tuple[str, str]] = []
    cursor = conn.execute(
        VERSION_SELECT
        + " FROM versions v JOIN models m ON m.id = v.model_id"
        + where
        + " ORDER BY m.name, v.version",
        args,
    )
    for (
        row_model,
        number,
        status,
        uri,
        sha256,
        size,
        fmt,
        run_id,
        commit,
        dataset_uri,
        dataset_digest,
        parent,
        params,
        metrics,
        tags,
        description,
        created_by,
        created_at,
        decision,
        decided_by,
        decided_at,
        decision_comment,
        archived_by,
        archived_at,
        archive_reason,
    ) in cursor:  # streamed, not fetchall(): one batch of rows alive at a time
        if row_model != current:
            current = row_model
            model = names.get(row_model, row_model)
            model_keys = keys[model]
        counts[model] = counts.get(model, 0) + 1
        refs = extra_refs.get((model, number))
        ref = str(number)
        # The record of modelreg.central.records.version_record, as structs that msgspec encodes to
        # the same msgpack map in C; "ref" last, so every ref naming it can share its body.
        record = _Version(
            model,
            number,
            status,
            _Artifact(uri, sha256, size, fmt),
            _Lineage(run_id, commit, dataset_uri, dataset_digest, parent),
            p if (p := seen(params)) is not None else decode(params),
            m if (m := seen(metrics)) is not None else decode(metrics),
            t if (t := seen(tags)) is not None else decode(tags),
            description,
            created_by,
            created_at,
            _Decision(decision, decided_by, decided_at, decision_comment) if decision else None,
            _Archived(archived_by, archived_at, archive_reason) if archived_at else None,
            sorted(r for r in refs if r != "latest") if refs else no_aliases,
            ref,
        )
        entry = _OK_RESULT + encode(record)
        key = (model, ref)
        resolve[key] = entry
        model_keys.append(key)
        if refs:
            if latest_number.get(model) == number:
                latest = msgspec.to_builtins(record)
                del latest["ref"]
                latest_records[model] = latest
            head_body = entry[: -len(pack(ref))]
            for alias in refs:
                key = (model, alias)
                resolve[key] = head_body + pack(alias)
                model_keys.append(key)

    for row in model_rows:
        name = names[row["name"]]
        model_rec = model_record(row, by_model.get(name, {}), latest_records.get(name))
        out.model_records[name] = model_rec
        out.get[name] = ok_entry(pack(model_rec))
        out.model_keys[name] = tuple(keys[name])
        counts.setdefault(name, 0)
