"""Reach into a replica the way an accident or an attacker would: list, delete, copy back and
damage its objects, for ``file://`` and ``s3://`` alike (through ``modelreg.objectstore``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import obstore

from modelreg.central.replica_check import ReplicaFile, parse_key
from modelreg.objectstore import open_store

Snapshot = dict[str, bytes]


def _store(base_url: str) -> obstore.store.ObjectStore:
    return open_store(base_url, os.environ)


def files(base_url: str, database: str = "registry") -> list[ReplicaFile]:
    """The LTX files of one database's replica."""
    items = obstore.list(_store(base_url), database + "/").collect()
    parsed = [parse_key(str(item["path"]), item) for item in items]
    return sorted((f for f in parsed if f is not None), key=lambda f: (f.level, f.min_txid))


def wipe(base_url: str) -> int:
    """Delete every object of the replica (``rm -rf`` of its contents); how many went."""
    store = _store(base_url)
    keys = [str(item["path"]) for item in obstore.list(store).collect()]
    for key in keys:
        obstore.delete(store, key)
    return len(keys)


def delete(base_url: str) -> None:
    """Delete the replica: ``rm -rf`` of a ``file://`` directory (retried while litestream
    writes into it), every object of an S3 prefix."""
    if not base_url.startswith("file://"):
        wipe(base_url)
        return
    path = Path(base_url.removeprefix("file://"))
    for _ in range(50):
        try:
            shutil.rmtree(path)
            return
        except FileNotFoundError:
            return
        except OSError:  # "directory not empty": a file appeared while it was being removed
            continue
    raise AssertionError(f"could not delete {path}")


def snapshot(base_url: str) -> Snapshot:
    """Every object of the replica, by key (an "old copy" to put back later)."""
    store = _store(base_url)
    keys = [str(item["path"]) for item in obstore.list(store).collect()]
    return {key: bytes(obstore.get(store, key).bytes()) for key in keys}


def replace(base_url: str, old: Snapshot) -> None:
    """Replace the whole replica with an older copy of it."""
    wipe(base_url)
    store = _store(base_url)
    for key, data in old.items():
        obstore.put(store, key, data)


def read(base_url: str, key: str) -> bytes:
    return bytes(obstore.get(_store(base_url), key).bytes())


def damage(base_url: str, key: str) -> bytes:
    """Flip bytes in the middle of one object (its page data); the original bytes."""
    store = _store(base_url)
    original = bytes(obstore.get(store, key).bytes())
    broken = bytearray(original)
    middle = len(broken) // 2
    for offset in range(middle, min(middle + 8, len(broken) - 16)):
        broken[offset] ^= 0xFF
    obstore.put(store, key, bytes(broken))
    return original


def local_level0(data_dir: Path, database: str = "registry") -> Path:
    """Where central's litestream keeps the level-0 files it uploads."""
    return data_dir / f".{database}.db-litestream" / "ltx" / "0"
