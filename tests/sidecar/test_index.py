"""Loading a registry.db copy into the pre-encoded index."""

from __future__ import annotations

import gc
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from modelreg.central.records import VERSION_SELECT, version_record
from modelreg.errors import AliasNotFound, ModelNotFound, VersionNotFound
from modelreg.sidecar import snapshot as saved
from modelreg.sidecar.index import Index, IndexError_, build_list_entry, load, read_head
from modelreg.sidecar.protocol import ok_entry, ok_frame, pack
from tests.sidecar.registry_db import RegistryDB


@pytest.fixture
def db(tmp_path: Path) -> Iterator[RegistryDB]:
    registry = RegistryDB(tmp_path / "registry.db")
    registry.add_model("fraud", description="fraud scores", tags={"team": "risk"})
    registry.add_version("fraud", "s3://b/1", status="approved", params={"lr": 0.1})
    registry.add_version("fraud", "s3://b/2", status="approved")
    registry.add_version("fraud", "s3://b/3", status="archived")
    registry.set_alias("fraud", "production", 1)
    registry.set_alias("fraud", "canary", 2)
    registry.add_model("empty")
    registry.add_model("ünï-cödé")
    registry.add_version("ünï-cödé", "file:///tmp/ü")
    registry.heartbeat(age_s=5)
    yield registry
    registry.close()


def answer(index: Index, model: str, ref: str, rid: Any = None) -> dict[str, Any]:
    frame = ok_frame(index.resolve[(model, ref)] + index.tail, pack(0), rid)
    decoded: dict[str, Any] = msgpack.unpackb(frame[4:])
    return decoded


def central_record(db: RegistryDB, model: str, version: int) -> dict[str, Any]:
    row = db.conn.execute(
        VERSION_SELECT + " FROM versions v JOIN models m ON m.id = v.model_id"
        " WHERE m.name = ? AND v.version = ?",
        (model, version),
    ).fetchone()
    aliases = [
        r[0]
        for r in db.conn.execute(
            "SELECT a.name FROM aliases a JOIN models m ON m.id = a.model_id"
            " WHERE m.name = ? AND a.version = ?",
            (model, version),
        )
    ]
    return version_record(row, aliases)


class TestLoad:
    def test_alias_answer_is_the_version_record_plus_ref(self, db: RegistryDB) -> None:
        """Resolving an alias answers central's version record with ``ref`` added."""
        index = load(db.path)
        expected = {
            "ok": True,
            "result": {**central_record(db, "fraud", 1), "ref": "production"},
            "revision": db.revision,
            "age_ms": 0,
            "id": 42,
        }
        assert expected == answer(index, "fraud", "production", 42)

    def test_version_numbers_and_latest(self, db: RegistryDB) -> None:
        """Every version answers by number; latest is the highest non-archived one."""
        index = load(db.path)
        assert answer(index, "fraud", "3")["result"]["status"] == "archived"
        latest = answer(index, "fraud", "latest")["result"]
        assert (latest["version"], latest["ref"]) == (2, "latest")

    def test_model_without_versions_has_no_latest(self, db: RegistryDB) -> None:
        """A model with no version has no latest, and its get answer says so."""
        index = load(db.path)
        assert ("empty", "latest") not in index.resolve
        get = msgpack.unpackb(ok_frame(index.get["empty"] + index.tail, pack(0))[4:])
        assert get["result"]["latest"] is None

    def test_unicode_names(self, db: RegistryDB) -> None:
        """Non-ASCII model names and URIs round-trip."""
        index = load(db.path)
        assert answer(index, "ünï-cödé", "1")["result"]["artifact"]["uri"] == "file:///tmp/ü"

    def test_get_and_list(self, db: RegistryDB) -> None:
        """get answers the model record; list answers every model record, sorted by name."""
        index = load(db.path)
        get = msgpack.unpackb(ok_frame(index.get["fraud"] + index.tail, pack(0))[4:])["result"]
        expected = {"canary": 2, "production": 1}
        assert expected == get["aliases"]
        assert get["latest"]["version"] == 2
        assert get["tags"] == {"team": "risk"}
        listed = msgpack.unpackb(ok_frame(index.list_entry + index.tail, pack(0))[4:])
        items = listed["result"]["items"]
        assert [item["name"] for item in items] == ["empty", "fraud", "ünï-cödé"]

    def test_counts_and_heartbeat(self, db: RegistryDB) -> None:
        """The index counts models and versions and carries the replicated heartbeat."""
        index = load(db.path)
        assert (3, 4, db.revision) == (index.models, index.versions, index.revision)
        head = read_head(db.path)
        assert head.revision == index.revision
        assert head.heartbeat_ms == index.heartbeat_ms
        assert index.heartbeat_ms is not None

    def test_not_found_classification(self, db: RegistryDB) -> None:
        """A miss names what is missing: the model, the version or the alias."""
        index = load(db.path)
        assert isinstance(index.not_found("nope", "x"), ModelNotFound)
        assert isinstance(index.not_found("fraud", "9"), VersionNotFound)
        assert isinstance(index.not_found("empty", "latest"), VersionNotFound)
        assert isinstance(index.not_found("fraud", "staging"), AliasNotFound)

    def test_load_leaves_no_connection_open(self, db: RegistryDB) -> None:
        """After a load, an exclusive lock on the file is immediately available."""
        load(db.path)
        read_head(db.path)
        other = sqlite3.connect(db.path, isolation_level=None, timeout=0)
        try:
            other.execute("BEGIN EXCLUSIVE")
            other.execute("COMMIT")
        finally:
            other.close()

    @pytest.mark.parametrize(
        "how",
        ["full", "incremental", "same revision", "other history", "unchanged saved index"],
    )
    def test_no_descriptor_survives_a_load_with_the_gc_off(
        self, db: RegistryDB, tmp_path: Path, how: str
    ) -> None:
        """With the cyclic GC off (as the follower runs loads) no load path leaves the copy
        open: a connection left to the collector would stay open and block litestream."""
        first = load(db.path)
        other = RegistryDB(tmp_path / "other.db")
        other.add_model("a")
        other.close()
        saved.save(first, tmp_path / "index.msgpack")
        loads: dict[str, Callable[[], Index]] = {
            "full": lambda: load(db.path),
            "incremental": lambda: (db.set_alias("fraud", "canary", 1), load(db.path, first))[1],
            "same revision": lambda: load(db.path, first),
            "other history": lambda: load(tmp_path / "other.db", first),
            "unchanged saved index": lambda: load(db.path, saved.read(tmp_path / "index.msgpack")),
        }
        gc.collect()
        before = _fds_on(db.path)  # the fixture's writer connection
        gc.disable()
        try:
            loads[how]()
            held = [
                target
                for fd in os.listdir("/proc/self/fd")
                if (target := _fd_target(fd)).startswith(str(tmp_path))
                and not target.startswith(str(db.path))  # the fixture's own writer
            ]
            held_registry = _fds_on(db.path) - before
        finally:
            gc.enable()
        assert ([], 0) == (held, held_registry)

    @pytest.mark.parametrize(
        ("column", "value"),
        [
            ("params", "[1, 2]"),
            ("metrics", '{"loss": NaN, "auc": Infinity}'),
            ("tags", ""),
            ("size", 1.0000000000000002),
            ("size", None),
            ("description", 'ünï\u2028\x00 "quoted"'),
            ("decision", ""),
            ("archived_at", ""),
        ],
    )
    def test_every_column_value_reads_as_central_records_does(
        self, db: RegistryDB, column: str, value: object
    ) -> None:
        """Whatever a column holds, the answer bytes are msgpack of central's version_record."""
        db.conn.execute(f"UPDATE versions SET {column} = ? WHERE version = 1", (value,))
        index = load(db.path)
        record = central_record(db, "fraud", 1)
        expected = ok_entry(pack({**record, "ref": "production"}))
        assert expected == index.resolve[("fraud", "production")]
        assert ok_entry(pack({**record, "ref": "1"})) == index.resolve[("fraud", "1")]


def snapshot(index: Index) -> dict[str, Any]:
    """Everything an index answers, decoded (for comparing two indexes)."""
    return {
        "resolve": {
            k: msgpack.unpackb(v[len(pack("ok")) + 1 + len(pack("result")) :])
            for k, v in index.resolve.items()
        },
        "get": {
            k: msgpack.unpackb(v[len(pack("ok")) + 1 + len(pack("result")) :])
            for k, v in index.get.items()
        },
        "list": msgpack.unpackb(index.list_entry[len(pack("ok")) + 1 + len(pack("result")) :]),
        "counts": (index.models, index.versions, index.revision),
    }


class TestIncrementalLoad:
    def test_reload_equals_a_full_load(self, db: RegistryDB) -> None:
        """After writes, loading on top of the previous index answers exactly as a full load."""
        first = load(db.path)
        db.add_version("fraud", "s3://b/4", status="approved")
        db.set_alias("fraud", "production", 4)
        db.add_model("new")
        db.add_version("new")
        db.heartbeat()
        again = load(db.path, previous=first)
        full = load(db.path)
        assert (True, False) == (again.incremental, full.incremental)
        assert snapshot(full) == snapshot(again)

    def test_unchanged_models_share_their_bytes(self, db: RegistryDB) -> None:
        """Entries of models no event named are the very same objects in the new index."""
        first = load(db.path)
        db.set_alias("fraud", "canary", 1)
        again = load(db.path, previous=first)
        assert again.resolve[("ünï-cödé", "1")] is first.resolve[("ünï-cödé", "1")]
        assert again.resolve[("fraud", "1")] is not first.resolve[("fraud", "1")]

    def test_other_history_means_full_load(self, db: RegistryDB, tmp_path: Path) -> None:
        """A copy whose event at the old revision differs (another central) is loaded in full."""
        first = load(db.path)
        other = RegistryDB(tmp_path / "other.db")
        for name in ("a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m"):
            other.add_model(name)
        other.close()
        again = load(tmp_path / "other.db", previous=first)
        assert (False, 13) == (again.incremental, again.models)


class TestExtendsPrevious:
    def test_later_revision_of_the_same_history_extends(self, db: RegistryDB) -> None:
        """A copy that continues the served history extends it, full or incremental."""
        first = load(db.path)
        db.set_alias("fraud", "canary", 1)
        assert (True, True) == (
            load(db.path, first).extends_previous,
            load(db.path).extends_previous,
        )

    def test_lower_revision_does_not_extend(self, db: RegistryDB, tmp_path: Path) -> None:
        """A copy behind the served revision (a rewound central) does not extend it."""
        other = RegistryDB(tmp_path / "other.db")
        other.add_model("a")
        other.close()
        assert False is load(tmp_path / "other.db", load(db.path)).extends_previous

    def test_same_revision_other_hash_does_not_extend(self, db: RegistryDB, tmp_path: Path) -> None:
        """The same revision reached by another history (another event hash) does not."""
        first = load(db.path)
        other = RegistryDB(tmp_path / "other.db")
        while other.revision < first.revision:
            other.add_model(f"m{other.revision}")
        other.close()
        again = load(tmp_path / "other.db", first)
        assert (first.revision, False) == (again.revision, again.extends_previous)

    def test_higher_revision_other_history_does_not_extend(
        self, db: RegistryDB, tmp_path: Path
    ) -> None:
        """A longer history that holds another event at the served revision does not."""
        first = load(db.path)
        other = RegistryDB(tmp_path / "other.db")
        while other.revision < first.revision + 5:
            other.add_model(f"m{other.revision}")
        other.close()
        assert False is load(tmp_path / "other.db", first).extends_previous


class TestListEntry:
    @pytest.mark.parametrize("count", [0, 1, 15, 16, 17, 70_000])
    def test_spliced_list_equals_packing_it(self, count: int) -> None:
        """The list entry spliced from get entries is byte for byte the packed list."""
        records = {f"m{i:05d}": {"name": f"m{i:05d}", "n": i} for i in range(count)}
        get = {name: ok_entry(pack(record)) for name, record in records.items()}
        expected = ok_entry(pack({"items": [records[n] for n in sorted(records)]}))
        assert expected == build_list_entry(get)


class TestSavedIndex:
    def test_round_trip(self, db: RegistryDB, tmp_path: Path) -> None:
        """A saved index reads back with the same answers, revision and history hash."""
        index = load(db.path)
        snapshot_file = tmp_path / "index.msgpack"
        saved.save(index, snapshot_file)
        back = saved.read(snapshot_file)
        assert back is not None
        assert (snapshot(index), index.last_hash) == (snapshot(back), back.last_hash)

    def test_cold_start_reuses_it_and_catches_up(self, db: RegistryDB, tmp_path: Path) -> None:
        """Loading a copy on top of its saved index reuses it, re-encoding only what changed."""
        snapshot_file = tmp_path / "index.msgpack"
        saved.save(load(db.path), snapshot_file)
        same = load(db.path, previous=saved.read(snapshot_file))
        db.set_alias("fraud", "canary", 1)
        moved = load(db.path, previous=saved.read(snapshot_file))
        assert (True, True) == (same.incremental, moved.incremental)
        assert snapshot(load(db.path)) == snapshot(moved)

    @pytest.mark.parametrize("content", [b"", b"\x93\x01\x02", b"garbage" * 10])
    def test_unreadable_file_is_ignored(self, tmp_path: Path, content: bytes) -> None:
        """A missing, truncated or foreign file reads as None (a full load follows)."""
        path = tmp_path / "index.msgpack"
        assert saved.read(path) is None
        path.write_bytes(content)
        assert saved.read(path) is None


class TestLoadErrors:
    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing copy raises IndexError_ (and creates nothing)."""
        with pytest.raises(IndexError_):
            load(tmp_path / "none.db")
        assert not (tmp_path / "none.db").exists()

    def test_not_a_registry(self, tmp_path: Path) -> None:
        """A file that is not a registry database raises IndexError_."""
        path = tmp_path / "junk.db"
        path.write_bytes(b"not sqlite at all" * 100)
        with pytest.raises(IndexError_):
            load(path)
        with pytest.raises(IndexError_):
            read_head(path)


def _fd_target(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def _fds_on(path: Path) -> int:
    """Descriptors of this process on ``path`` or its -wal/-shm/-journal files."""
    return sum(1 for fd in os.listdir("/proc/self/fd") if _fd_target(fd).startswith(str(path)))
