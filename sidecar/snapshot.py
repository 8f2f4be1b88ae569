"""The index saved beside the copies, so a restarted sidecar answers without re-encoding.

A cold start with 100k versions would otherwise spend seconds encoding answers it had already
encoded before the restart. :func:`save` writes the index's entries (msgpack, written to a
temporary file and renamed); :func:`read` rebuilds an :class:`~modelreg.sidecar.index.Index` from
them. The saved index is never trusted on its own: the follower passes it to
:func:`modelreg.sidecar.index.load` as ``previous``, which uses it only if the local copy continues
its history (same event hash at its revision) and re-encodes whatever changed since.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import msgpack

from modelreg.sidecar.index import Index, build_list_entry
from modelreg.sidecar.protocol import ok_entry, pack, revision_tail

__all__ = ["FORMAT", "SAVED_INDEX_NAME", "read", "save"]

#: File name of the saved index inside the data directory.
SAVED_INDEX_NAME = "index.msgpack"
#: Format version; another value is ignored (a full load follows).
FORMAT = 1


def save(index: Index, path: Path) -> None:
    """Write ``index`` to ``path`` atomically (temporary file + rename). Raises ``OSError``.

    Packed one model at a time (the same bytes as packing the whole list at once): a single
    ``packb`` of 100k entries held the GIL for ~0.1-0.2 s, stalling lookups meanwhile.
    """
    packer = msgpack.Packer(use_bin_type=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(packer.pack_array_header(5))
        for value in (FORMAT, index.revision, index.heartbeat_ms, index.last_hash):
            fh.write(packer.pack(value))
        fh.write(packer.pack_array_header(len(index.model_records)))
        resolve = index.resolve
        for name, record in index.model_records.items():
            keys = index.model_keys.get(name, ())
            entries = [[ref, resolve[(model, ref)]] for model, ref in keys]
            fh.write(packer.pack([name, record, index.version_counts.get(name, 0), entries]))
    os.replace(tmp, path)


def read(path: Path) -> Index | None:
    """The index saved at ``path``, or None when it is missing, unreadable or of another format.

    Unpacked one model at a time from the file (not one ``unpackb`` of the whole file, which
    held the GIL for ~0.15 s per 100k versions while the socket was already answering).
    """
    started = time.perf_counter()
    try:
        with open(path, "rb") as fh:
            return _read(fh, path, started)
    except (OSError, ValueError, TypeError, KeyError, StopIteration, msgpack.UnpackException):
        return None


def _models(unpacker: msgpack.Unpacker) -> Iterator[Any]:
    for _ in range(unpacker.read_array_header()):
        yield unpacker.unpack()


def _read(fh: BinaryIO, path: Path, started: float) -> Index | None:
    unpacker = msgpack.Unpacker(fh, raw=False, strict_map_key=False)
    if unpacker.read_array_header() != 5 or unpacker.unpack() != FORMAT:
        return None
    revision, heartbeat_ms, last_hash = unpacker.unpack(), unpacker.unpack(), unpacker.unpack()
    models = _models(unpacker)
    resolve: dict[tuple[str, str], bytes] = {}
    get: dict[str, bytes] = {}
    records: dict[str, dict[str, Any]] = {}
    keys: dict[str, tuple[tuple[str, str], ...]] = {}
    counts: dict[str, int] = {}
    for name, record, count, entries in models:
        records[name] = record
        get[name] = ok_entry(pack(record))
        counts[name] = int(count)
        model_keys = []
        for ref, entry in entries:
            key = (name, ref)
            resolve[key] = entry
            model_keys.append(key)
        keys[name] = tuple(model_keys)
    list_entry = build_list_entry(get)
    return Index(
        revision=int(revision),
        heartbeat_ms=heartbeat_ms,
        resolve=resolve,
        get=get,
        list_entry=list_entry,
        tail=revision_tail(int(revision)),
        models=len(records),
        versions=sum(counts.values()),
        loaded_at=time.time(),
        load_ms=(time.perf_counter() - started) * 1000,
        path=str(path),
        last_hash=str(last_hash),
        incremental=False,
        model_records=records,
        model_keys=keys,
        version_counts=counts,
    )
