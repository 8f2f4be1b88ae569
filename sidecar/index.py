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

import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from central.errors import (
    AliasNotFound,
    ModelNotFound,
    NotFound,
    RegistryError,
    Unavailable,
    VersionNotFound,
)
from central.records import TIME_FORMAT, VERSION_SELECT, model_record, version_record
from sidecar.protocol import ok_prefix, pack

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


def _read(conn: sqlite3.Connection) -> tuple[Head, list[Any], list[Any], list[Any]]:
    conn.execute("BEGIN")  # one consistent snapshot for all the reads below
    try:
        head = _head(conn)
        conn.row_factory = sqlite3.Row
        models = conn.execute("SELECT * FROM models ORDER BY name").fetchall()
        conn.row_factory = None
        aliases = conn.execute(
            "SELECT m.name, a.name, a.version FROM aliases a JOIN models m ON m.id = a.model_id"
        ).fetchall()
        versions = conn.execute(
            VERSION_SELECT + " FROM versions v JOIN models m ON m.id = v.model_id"
            " ORDER BY m.name, v.version"
        ).fetchall()
    finally:
        conn.execute("COMMIT")
    return head, models, aliases, versions


def load(path: Path) -> Index:
    """Read the whole copy at ``path`` into a new :class:`Index`.

    CPU-bound (a few seconds for a million versions): call it in a worker thread. Raises
    :class:`IndexError_` as :func:`read_head` does.
    """
    started = time.perf_counter()
    conn = _connect(path)
    try:
        head, model_rows, alias_rows, version_rows = _read(conn)
    except sqlite3.Error as exc:
        raise IndexError_(f"cannot load {path}: {exc}", path=str(path)) from None
    finally:
        conn.close()
    revision = head.revision

    # model -> {alias: version}, and (model, version) -> [aliases]
    by_model: dict[str, dict[str, int]] = {}
    by_version: dict[tuple[str, int], list[str]] = {}
    for model, alias, version in alias_rows:
        by_model.setdefault(model, {})[alias] = version
        by_version.setdefault((model, version), []).append(alias)

    ref_key = pack("ref")
    resolve: dict[tuple[str, str], bytes] = {}
    # model -> (version number, record body without its map header) of the latest version
    latest: dict[str, tuple[int, dict[str, Any]]] = {}
    records: dict[tuple[str, int], bytes] = {}
    # Each record is packed once, with "ref" as its last key, so the same body serves every
    # ref that names it: body + "ref" key + the ref.
    cut = len(ref_key) + len(pack(""))
    for row in version_rows:
        model, number = row[0], row[1]
        record = version_record(row, by_version.get((model, number), ()))
        record["ref"] = ""
        body = pack(record)[:-cut]
        del record["ref"]
        records[(model, number)] = body
        if record["status"] != "archived":
            latest[model] = (number, record)
        ref = str(number)
        resolve[(model, ref)] = ok_prefix(body + ref_key + pack(ref), revision)
    for model, aliases in by_model.items():
        for alias, number in aliases.items():
            target = records.get((model, number))
            if target is not None:
                resolve[(model, alias)] = ok_prefix(target + ref_key + pack(alias), revision)
    for model, (number, _) in latest.items():
        resolve[(model, "latest")] = ok_prefix(
            records[(model, number)] + ref_key + pack("latest"), revision
        )

    get: dict[str, bytes] = {}
    items: list[dict[str, Any]] = []
    for row in model_rows:
        name = row["name"]
        newest = latest.get(name)
        record = model_record(row, by_model.get(name, {}), newest[1] if newest else None)
        items.append(record)
        get[name] = ok_prefix(pack(record), revision)
    list_prefix = ok_prefix(pack({"items": items}), revision)

    return Index(
        revision=revision,
        heartbeat_ms=head.heartbeat_ms,
        resolve=resolve,
        get=get,
        list_prefix=list_prefix,
        models=len(model_rows),
        versions=len(version_rows),
        loaded_at=time.time(),
        load_ms=(time.perf_counter() - started) * 1000,
        path=str(path),
    )
