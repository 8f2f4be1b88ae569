"""The in-memory index: every answer of a registry.db copy, pre-encoded, immutable.

:func:`read_head` and :func:`load` each open the copy through one short-lived read-only
connection (``file:...?mode=ro``) and close it before returning: a long-lived connection would
block ``litestream restore -f`` from applying changes (DESIGN.md, "Known pitfalls"). A load
builds a new :class:`Index`; the server swaps the reference atomically, so a lookup never sees
a half-built index and never waits for a load.

Answers are stored as :func:`sidecar.protocol.ok_prefix` bytes (``ok``, ``result``,
``revision`` and the ``age_ms`` key already encoded); a lookup appends the age and the ``id``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack

from central.errors import (
    AliasNotFound,
    ModelNotFound,
    NotFound,
    RegistryError,
    Unavailable,
    VersionNotFound,
)
from central.records import (
    TIME_FORMAT,
    VERSION_COLUMNS,
    VERSION_SELECT,
    model_record,
    version_record,
)
from sidecar.protocol import _AGE_KEY, _OK_RESULT, _REVISION_KEY, ok_prefix, pack

__all__ = ["Head", "Index", "IndexError_", "load", "read_head"]

_BUSY_TIMEOUT_S = 2.0


class IndexError_(Unavailable):
    """The copy cannot be read (missing, locked for too long, corrupt or not a registry)."""


@dataclass(frozen=True, slots=True)
class Head:
    """What changes most often in a copy: its revision and its replicated heartbeat."""

    revision: int
    #: Replicated heartbeat time, epoch milliseconds; None when central never wrote one.
    heartbeat_ms: int | None


@dataclass(frozen=True, slots=True)
class Index:
    """One immutable snapshot of the registry, every answer pre-encoded.

    ``resolve`` maps ``(model, ref)`` -> answer prefix, where ``ref`` is an alias, a version
    number in decimal, or ``latest``. ``get`` maps a model name -> answer prefix.
    """

    revision: int
    heartbeat_ms: int | None
    resolve: dict[tuple[str, str], bytes]
    get: dict[str, bytes]
    list_prefix: bytes
    models: int
    versions: int
    #: Wall-clock time of the load, epoch seconds.
    loaded_at: float
    load_ms: float
    #: The copy it was loaded from.
    path: str

    def not_found(self, model: str, ref: str | None = None) -> RegistryError:
        """The error for a lookup that missed (which of model, version or alias is absent)."""
        if model not in self.get:
            return ModelNotFound(f"no model named {model!r}", model=model)
        if ref is None:
            return NotFound(f"nothing found for {model!r}", model=model)
        if ref.isdigit():
            return VersionNotFound(
                f"model {model!r} has no version {ref}", model=model, version=ref
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


#: Positions of the JSON columns in a :data:`VERSION_SELECT` row.
_JSON_COLUMNS = tuple(VERSION_COLUMNS.index(c) for c in ("v.params", "v.metrics", "v.tags"))
_JSON_KEYS = ("params", "metrics", "tags")
_JSON_FIRST, _JSON_END = _JSON_COLUMNS[0], _JSON_COLUMNS[-1] + 1
assert tuple(range(_JSON_FIRST, _JSON_END)) == _JSON_COLUMNS, "JSON columns must be adjacent"
_BLANK_JSON = ("",) * len(_JSON_COLUMNS)
_REF_KEY = pack("ref")
#: Length of a packed empty string, the placeholder ref every record body is cut before.
_CUT = len(_REF_KEY) + len(pack(""))


class _JsonObjects:
    """``json.loads`` of the JSON-object columns, memoised by text for one load.

    Many versions carry identical params, metrics or tags (``{}`` above all), so decoding
    each distinct text once is most of the load time saved. Same rules as
    ``central.records``: anything but a JSON object reads as ``{}``. The decoded objects are
    shared between records and never mutated (they are only packed).
    """

    def __init__(self) -> None:
        self._seen: dict[str, dict[str, Any]] = {}

    def __call__(self, text: str | None) -> dict[str, Any]:
        if not text:
            return {}
        found = self._seen.get(text)
        if found is None:
            try:
                value = json.loads(text)
            except ValueError:
                value = None
            found = value if isinstance(value, dict) else {}
            self._seen[text] = found
        return found


def load(path: Path) -> Index:
    """Read the whole copy at ``path`` into a new :class:`Index`.

    CPU-bound (about a second per 100k versions): call it in a worker thread. The connection
    stays open only while the rows are read, inside one read transaction. Raises
    :class:`IndexError_` as :func:`read_head` does.
    """
    started = time.perf_counter()
    # Copy the file with SQLite's backup API (a consistent snapshot, page copies only) into a
    # private scratch file beside it, and close it at once: the followed file is held for
    # milliseconds, not for the whole load, so litestream's apply is never kept waiting. A
    # file rather than ":memory:" keeps the snapshot out of the process's RSS.
    conn = _connect(path)
    fd, scratch = tempfile.mkstemp(prefix=".load-", suffix=".db", dir=path.parent)
    os.close(fd)
    snapshot = sqlite3.connect(scratch, isolation_level=None)
    try:
        snapshot.execute("PRAGMA journal_mode=OFF")
        snapshot.execute("PRAGMA synchronous=OFF")
        try:
            conn.backup(snapshot)
        finally:
            conn.close()
        head = _head(snapshot)
        snapshot.row_factory = sqlite3.Row
        model_rows = snapshot.execute("SELECT * FROM models ORDER BY name").fetchall()
        snapshot.row_factory = None
        alias_rows = snapshot.execute(
            "SELECT m.name, a.name, a.version FROM aliases a JOIN models m ON m.id = a.model_id"
        ).fetchall()
        latest_rows = snapshot.execute(
            "SELECT m.name, MAX(v.version) FROM versions v JOIN models m ON m.id = v.model_id"
            " WHERE v.status != 'archived' GROUP BY m.name"
        ).fetchall()
        # Streamed, not fetchall(): only one batch of rows is alive at a time.
        version_rows = snapshot.execute(
            VERSION_SELECT + " FROM versions v JOIN models m ON m.id = v.model_id"
            " ORDER BY m.name, v.version"
        )
        return _build(path, started, head, model_rows, alias_rows, latest_rows, version_rows)
    except sqlite3.Error as exc:
        raise IndexError_(f"cannot load {path}: {exc}", path=str(path)) from None
    finally:
        snapshot.close()
        Path(scratch).unlink(missing_ok=True)


def _build(
    path: Path,
    started: float,
    head: Head,
    model_rows: list[Any],
    alias_rows: list[Any],
    latest_rows: list[Any],
    version_rows: Iterable[Any],
) -> Index:
    revision = head.revision
    tail = _REVISION_KEY + pack(revision) + _AGE_KEY

    # One str object per model name, shared by every key of that model.
    names: dict[str, str] = {row["name"]: row["name"] for row in model_rows}
    # model -> {alias: version}; (model, version) -> the extra refs naming it
    by_model: dict[str, dict[str, int]] = {}
    extra_refs: dict[tuple[str, int], list[str]] = {}
    for model, alias, version in alias_rows:
        by_model.setdefault(model, {})[alias] = version
        extra_refs.setdefault((model, version), []).append(alias)
    latest_number = dict(latest_rows)
    for model, version in latest_rows:
        extra_refs.setdefault((model, version), []).append("latest")
    latest_records: dict[str, dict[str, Any]] = {}

    decode = _JsonObjects()
    packer = msgpack.Packer(use_bin_type=True)  # one per load: Packer is not thread-safe
    pack_ = packer.pack
    resolve: dict[tuple[str, str], bytes] = {}
    versions = 0
    for row in version_rows:
        versions += 1
        model = names.get(row[0], row[0])
        number = row[1]
        refs = extra_refs.get((model, number))
        aliases = [r for r in refs if r != "latest"] if refs else ()
        # JSON columns blanked (-> {}) and decoded below through the memo
        record = version_record(row[:_JSON_FIRST] + _BLANK_JSON + row[_JSON_END:], aliases)
        for key, column in zip(_JSON_KEYS, _JSON_COLUMNS, strict=True):
            record[key] = decode(row[column])
        if latest_number.get(model) == number:
            latest_records[model] = dict(record)
        # Pack once with "ref" last; every ref naming this version reuses the same body.
        record["ref"] = ""
        head_body = _OK_RESULT + pack_(record)[:-_CUT] + _REF_KEY
        ref = str(number)
        resolve[(model, ref)] = head_body + pack_(ref) + tail
        if refs:
            for ref in refs:
                resolve[(model, ref)] = head_body + pack_(ref) + tail

    get: dict[str, bytes] = {}
    items: list[dict[str, Any]] = []
    for row in model_rows:
        name = row["name"]
        record = model_record(row, by_model.get(name, {}), latest_records.get(name))
        items.append(record)
        get[names[name]] = ok_prefix(pack(record), revision)
    list_prefix = ok_prefix(pack({"items": items}), revision)

    return Index(
        revision=revision,
        heartbeat_ms=head.heartbeat_ms,
        resolve=resolve,
        get=get,
        list_prefix=list_prefix,
        models=len(model_rows),
        versions=versions,
        loaded_at=time.time(),
        load_ms=(time.perf_counter() - started) * 1000,
        path=str(path),
    )
