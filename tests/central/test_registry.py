"""The registry facade against a real SQLite file: every method and every rule."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelreg import errors
from modelreg.central.config import CentralConfig
from modelreg.central.pagetoken import PageTokens
from modelreg.central.registry import UNSET, Registry
from modelreg.central.schema import MIGRATIONS, SchemaTooNew

#: The page-token signer of every registry these tests open, so they can make tokens.
TOKENS = PageTokens(b"k" * 32)
#: A token this registry issued for ``position`` of list ``kind``.
encode_token = TOKENS.encode

SHA = "a" * 64
SHA2 = "b" * 64
SHA3 = "c" * 64


def _nested(depth: int) -> list[object]:
    top: list[object] = []
    inner = top
    for _ in range(depth):
        deeper: list[object] = []
        inner.append(deeper)
        inner = deeper
    return top


#: Deeper than any consumer should have to decode (and than Python's JSON encoder can).
DEEP = _nested(5000)


def snapshot(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every registry table but the heartbeat, read from the file itself."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if r[0] != "heartbeat"
        ]
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in tables}
    finally:
        conn.close()


@pytest.fixture
async def reg(tmp_path: Path) -> AsyncIterator[Registry]:
    registry = Registry(CentralConfig(data_dir=tmp_path / "data"))
    registry.page_tokens = TOKENS
    await registry.open()
    try:
        yield registry
    finally:
        await registry.close()


async def seeded(reg: Registry, versions: int = 3, approve: tuple[int, ...] = (1, 3)) -> None:
    """Model ``fraud`` with ``versions`` versions by ``alice``; ``approve`` approved by bob."""
    await reg.create_model("alice", "fraud", description="fraud model", tags={"team": "risk"})
    for n in range(1, versions + 1):
        await reg.register_version(
            "alice", "fraud", artifact_uri=f"s3://models/fraud/{n}", sha256=f"{n:064x}"
        )
    for n in approve:
        await reg.decide("bob", "fraud", n, True, "looks good")


async def unchanged(
    reg: Registry, call: Callable[[], Awaitable[Any]], exc: type[errors.RegistryError]
) -> errors.RegistryError:
    """Run ``call``, expect ``exc``, and check that nothing in the database changed."""
    before = snapshot(reg.config.registry_db)
    revision = await reg.revision()
    with pytest.raises(exc) as info:
        await call()
    assert type(info.value) is exc
    assert before == snapshot(reg.config.registry_db)
    assert revision == await reg.revision()
    return info.value


class TestLifecycle:
    async def test_constructor_does_no_io(self, tmp_path: Path) -> None:
        """Building a Registry creates no directory and no file."""
        Registry(CentralConfig(data_dir=tmp_path / "absent"))
        assert not (tmp_path / "absent").exists()

    async def test_open_creates_wal_database_with_heartbeat(self, reg: Registry) -> None:
        """open() creates registry.db in WAL mode, migrated, with the heartbeat row."""
        conn = sqlite3.connect(reg.config.registry_db)
        try:
            assert "wal" == conn.execute("PRAGMA journal_mode").fetchone()[0]
            assert len(MIGRATIONS) == conn.execute("PRAGMA user_version").fetchone()[0]
            assert [(1, 0)] == conn.execute("SELECT id, revision FROM heartbeat").fetchall()
        finally:
            conn.close()

    async def test_write_connection_settings(self, tmp_path: Path) -> None:
        """A replicated store's writer runs with the settings Litestream requires."""
        config = CentralConfig(data_dir=tmp_path, replica_url="file:///unused")
        async with Registry(config) as reg:
            conn = reg.store._conn
            assert conn is not None
            assert 5000 == conn.execute("PRAGMA busy_timeout").fetchone()[0]
            assert 1 == conn.execute("PRAGMA synchronous").fetchone()[0]
            assert 0 == conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]

    async def test_unreplicated_store_checkpoints_itself(self, reg: Registry) -> None:
        """Without a replica nobody else checkpoints, so SQLite's autocheckpoint stays on."""
        conn = reg.store._conn
        assert conn is not None
        assert 1000 == conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]

    async def test_reopen_continues_the_chain(self, tmp_path: Path) -> None:
        """A reopened registry continues revisions and the hash chain where it stopped."""
        config = CentralConfig(data_dir=tmp_path)
        async with Registry(config) as first:
            await first.create_model("alice", "a")
        async with Registry(config) as second:
            assert 1 == await second.revision()
            record = await second.create_model("alice", "b")
            assert 2 == record["revision"]
            assert {"ok": True, "checked": 2} == {
                k: v for k, v in (await second.verify_audit()).items() if k in ("ok", "checked")
            }

    async def test_newer_schema_is_refused(self, tmp_path: Path) -> None:
        """A database from a newer release is refused with SchemaTooNew."""
        tmp_path.mkdir(exist_ok=True)
        conn = sqlite3.connect(tmp_path / "registry.db")
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
        conn.close()
        with pytest.raises(SchemaTooNew):
            await Registry(CentralConfig(data_dir=tmp_path)).open()

    async def test_closed_registry_is_unavailable(self, tmp_path: Path) -> None:
        """Calls on a closed registry raise Unavailable."""
        registry = Registry(CentralConfig(data_dir=tmp_path))
        await registry.open()
        await registry.close()
        with pytest.raises(errors.Unavailable):
            await registry.create_model("alice", "fraud")
        with pytest.raises(errors.Unavailable):
            await registry.get_model("fraud")

    async def test_heartbeat_updates_row_without_event(self, reg: Registry) -> None:
        """heartbeat() rewrites the heartbeat row with the revision and appends no event."""
        await reg.create_model("alice", "fraud")
        await reg.heartbeat()
        conn = sqlite3.connect(reg.config.registry_db)
        try:
            assert [(1, 1)] == conn.execute("SELECT id, revision FROM heartbeat").fetchall()
        finally:
            conn.close()
        assert 1 == (await reg.counts())["events"]


class TestModels:
    async def test_create_and_get(self, reg: Registry) -> None:
        """A created model reads back with its fields, no aliases and no latest version."""
        created = await reg.create_model(
            "alice", "fraud", description="d", owner="risk", tags={"team": "risk"}
        )
        assert 1 == created["revision"]
        got = await reg.get_model("fraud")
        assert {k: v for k, v in created.items() if k not in ("revision", "revision_hash")} == got
        assert ("fraud", "d", "risk", {"team": "risk"}, "alice", {}, None) == (
            got["name"],
            got["description"],
            got["owner"],
            got["tags"],
            got["created_by"],
            got["aliases"],
            got["latest"],
        )

    async def test_duplicate_name_is_refused(self, reg: Registry) -> None:
        """Creating a model twice raises AlreadyExists and changes nothing."""
        await reg.create_model("alice", "fraud")
        exc = await unchanged(reg, lambda: reg.create_model("bob", "fraud"), errors.AlreadyExists)
        assert "fraud" == exc.details["model"]

    @pytest.mark.parametrize(
        "name",
        ["", "Fraud", "-fraud", ".x", "a b", "a/b", "x" * 129, "é", 7, None, "a\x00"],
    )
    async def test_invalid_names(self, reg: Registry, name: Any) -> None:
        """Names outside [a-z0-9][a-z0-9._-]{0,127} raise InvalidName and write nothing."""
        await unchanged(reg, lambda: reg.create_model("alice", name), errors.InvalidName)

    async def test_longest_name_is_accepted(self, reg: Registry) -> None:
        """A 128-character name is valid."""
        name = "a" + "b" * 127
        assert name == (await reg.create_model("alice", name))["name"]

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"tags": {"k": 1}}, "tags"),
            ({"tags": ["k"]}, "tags"),
            ({"tags": {"": "v"}}, "tags"),
            ({"description": 5}, "description"),
            ({"description": "x" * 20000}, "description"),
            ({"owner": None}, "owner"),
        ],
    )
    async def test_invalid_fields(self, reg: Registry, kwargs: dict[str, Any], field: str) -> None:
        """Bad tags, description or owner raise InvalidField naming the field."""
        exc = await unchanged(
            reg, lambda: reg.create_model("alice", "fraud", **kwargs), errors.InvalidField
        )
        assert field == exc.details["field"]

    @pytest.mark.parametrize("actor", ["", None, "\ud800", "x" * 129])
    async def test_invalid_actor(self, reg: Registry, actor: Any) -> None:
        """An empty, missing, overlong or non-UTF-8 actor is refused."""
        await unchanged(reg, lambda: reg.create_model(actor, "fraud"), errors.InvalidField)

    async def test_update_changes_only_given_fields(self, reg: Registry) -> None:
        """update_model changes the given fields, keeps the others, bumps updated_at."""
        created = await reg.create_model("alice", "fraud", description="d", owner="o")
        updated = await reg.update_model("bob", "fraud", owner="risk", tags={"a": "b"})
        assert ("d", "risk", {"a": "b"}, 2) == (
            updated["description"],
            updated["owner"],
            updated["tags"],
            updated["revision"],
        )
        assert created["updated_at"] <= updated["updated_at"]

    async def test_update_unknown_model(self, reg: Registry) -> None:
        """Updating a missing model raises ModelNotFound and writes nothing."""
        await unchanged(
            reg, lambda: reg.update_model("bob", "ghost", owner="x"), errors.ModelNotFound
        )

    async def test_get_unknown_model(self, reg: Registry) -> None:
        """get_model of a missing model raises ModelNotFound with the name."""
        with pytest.raises(errors.ModelNotFound) as info:
            await reg.get_model("ghost")
        assert "ghost" == info.value.details["model"]

    async def test_list_with_prefix_and_pages(self, reg: Registry) -> None:
        """list_models pages through names in order, with an optional prefix."""
        for name in ("b-1", "a-2", "a-1", "a-3", "c"):
            await reg.create_model("alice", name)
        first = await reg.list_models(prefix="a-", limit=2)
        assert ["a-1", "a-2"] == [m["name"] for m in first["items"]]
        second = await reg.list_models(prefix="a-", limit=2, page_token=first["next_page_token"])
        assert (["a-3"], None) == (
            [m["name"] for m in second["items"]],
            second["next_page_token"],
        )
        everything = await reg.list_models()
        assert ["a-1", "a-2", "a-3", "b-1", "c"] == [m["name"] for m in everything["items"]]

    @pytest.mark.parametrize("limit", [0, 1001, -1, "10", True, None])
    async def test_bad_limit(self, reg: Registry, limit: Any) -> None:
        """A limit outside 1..1000 raises InvalidField(limit)."""
        with pytest.raises(errors.InvalidField) as info:
            await reg.list_models(limit=limit)
        assert "limit" == info.value.details["field"]

    @pytest.mark.parametrize(
        "token",
        [
            "garbage!",
            "",
            5,
            encode_token("events", 2),
            encode_token("models", 7),
            encode_token("models", "\ud800"),
        ],
    )
    async def test_bad_page_token(self, reg: Registry, token: Any) -> None:
        """A malformed page token, or one of another list, raises InvalidField(page_token)."""
        with pytest.raises(errors.InvalidField) as info:
            await reg.list_models(page_token=token)
        assert "page_token" == info.value.details["field"]

    @pytest.mark.parametrize(
        "token",
        [
            encode_token("versions", 2**70),
            encode_token("versions", -1),
            encode_token("versions", "3"),
            encode_token("search", ["fraud", 2**64]),
            encode_token("search", ["\udfff", 1]),
            encode_token("search", "fraud"),
        ],
    )
    async def test_forged_page_tokens(self, reg: Registry, token: str) -> None:
        """Well-encoded tokens with impossible positions raise InvalidField, not a crash."""
        await reg.create_model("alice", "fraud")
        with pytest.raises(errors.InvalidField):
            await reg.list_versions("fraud", page_token=token)
        with pytest.raises(errors.InvalidField):
            await reg.search_versions(page_token=token)
        with pytest.raises(errors.InvalidField):
            await reg.events(page_token=token)


class TestRegisterVersion:
    async def test_numbers_are_per_model_and_sequential(self, reg: Registry) -> None:
        """Versions are numbered 1, 2, 3 per model."""
        await reg.create_model("alice", "a")
        await reg.create_model("alice", "b")
        numbers = []
        for model in ("a", "b", "a", "a", "b"):
            record, created = await reg.register_version(
                "alice", model, artifact_uri="s3://x/y", sha256=SHA
            )
            assert created
            numbers.append((model, record["version"]))
        assert [("a", 1), ("b", 1), ("a", 2), ("a", 3), ("b", 2)] == numbers

    async def test_record_carries_every_field(self, reg: Registry) -> None:
        """A registered version's record holds its artifact, lineage and metadata."""
        await reg.create_model("alice", "fraud")
        await reg.register_version("alice", "fraud", artifact_uri="s3://x/1", sha256=SHA2)
        record, created = await reg.register_version(
            "alice",
            "fraud",
            artifact_uri="hf://org/model",
            sha256=SHA,
            size=123,
            format="onnx",
            run_id="run-7",
            commit="abc123",
            dataset_uri="s3://data/train",
            dataset_digest="sha256:" + SHA3,
            parent_version=1,
            params={"lr": 0.1, "layers": [1, 2]},
            metrics={"auc": 0.91, "n": 3},
            tags={"stage": "exp"},
            description="second",
            idempotency_key="push-2",
        )
        expected = {
            "model": "fraud",
            "version": 2,
            "status": "registered",
            "artifact": {"uri": "hf://org/model", "sha256": SHA, "size": 123, "format": "onnx"},
            "lineage": {
                "run_id": "run-7",
                "commit": "abc123",
                "dataset_uri": "s3://data/train",
                "dataset_digest": "sha256:" + SHA3,
                "parent_version": 1,
            },
            "params": {"lr": 0.1, "layers": [1, 2]},
            "metrics": {"auc": 0.91, "n": 3},
            "tags": {"stage": "exp"},
            "description": "second",
            "created_by": "alice",
            "decision": None,
            "archived": None,
            "aliases": [],
            "revision": 3,
        }
        assert created
        assert expected == {
            k: v for k, v in record.items() if k not in ("created_at", "revision_hash")
        }
        got = await reg.get_version("fraud", 2)
        assert {k: v for k, v in record.items() if k not in ("revision", "revision_hash")} == got

    @pytest.mark.parametrize(
        ("fields", "exc", "field"),
        [
            ({"sha256": "A" * 64}, errors.InvalidDigest, "sha256"),
            ({"sha256": "a" * 63}, errors.InvalidDigest, "sha256"),
            ({"sha256": None}, errors.InvalidDigest, "sha256"),
            ({"artifact_uri": "ftp://x/y"}, errors.InvalidURI, "artifact_uri"),
            ({"artifact_uri": "/local/path"}, errors.InvalidURI, "artifact_uri"),
            ({"artifact_uri": "s3:"}, errors.InvalidURI, "artifact_uri"),
            ({"artifact_uri": "s3://x/" + "y" * 3000}, errors.InvalidURI, "artifact_uri"),
            ({"artifact_uri": 5}, errors.InvalidURI, "artifact_uri"),
            ({"size": -1}, errors.InvalidField, "size"),
            ({"size": "12"}, errors.InvalidField, "size"),
            ({"metrics": {"auc": "high"}}, errors.InvalidField, "metrics"),
            ({"metrics": {"auc": True}}, errors.InvalidField, "metrics"),
            ({"metrics": {"auc": float("nan")}}, errors.InvalidField, "metrics"),
            ({"params": [1]}, errors.InvalidField, "params"),
            ({"params": {"x": float("inf")}}, errors.InvalidField, "params"),
            ({"tags": {"k": 1}}, errors.InvalidField, "tags"),
            ({"parent_version": 0}, errors.InvalidField, "parent_version"),
            ({"parent_version": 9}, errors.InvalidField, "parent_version"),
            ({"run_id": 5}, errors.InvalidField, "run_id"),
            ({"format": "x" * 65}, errors.InvalidField, "format"),
            ({"idempotency_key": ""}, errors.InvalidField, "idempotency_key"),
            ({"colour": "red"}, errors.InvalidField, "colour"),
            ({"description": "\ud800"}, errors.InvalidField, "description"),
            ({"tags": {"\udfff": "v"}}, errors.InvalidField, "tags"),
            ({"params": {"big": 2**64}}, errors.InvalidField, "params"),
            ({"params": {"deep": DEEP}}, errors.InvalidField, "params"),
            ({"params": {"t": (1, 2)}}, errors.InvalidField, "params"),
            ({"artifact_uri": "s3://x/\ud800"}, errors.InvalidURI, "artifact_uri"),
            ({"artifact_uri": "s3://x/a\nb"}, errors.InvalidURI, "artifact_uri"),
        ],
    )
    async def test_bad_input_changes_nothing(
        self,
        reg: Registry,
        fields: dict[str, Any],
        exc: type[errors.RegistryError],
        field: str,
    ) -> None:
        """Each invalid field raises its class naming the field, and writes nothing."""
        await reg.create_model("alice", "fraud")
        sent = {"artifact_uri": "s3://x/y", "sha256": SHA, **fields}
        error = await unchanged(reg, lambda: reg.register_version("alice", "fraud", **sent), exc)
        assert field == error.details["field"]

    @pytest.mark.parametrize("missing", ["artifact_uri", "sha256"])
    async def test_required_fields(self, reg: Registry, missing: str) -> None:
        """artifact_uri and sha256 are required."""
        await reg.create_model("alice", "fraud")
        sent = {"artifact_uri": "s3://x/y", "sha256": SHA}
        del sent[missing]
        error = await unchanged(
            reg, lambda: reg.register_version("alice", "fraud", **sent), errors.InvalidField
        )
        assert missing == error.details["field"]

    async def test_unknown_model(self, reg: Registry) -> None:
        """Registering into a missing model raises ModelNotFound."""
        await unchanged(
            reg,
            lambda: reg.register_version("alice", "ghost", artifact_uri="s3://x", sha256=SHA),
            errors.ModelNotFound,
        )

    async def test_retry_with_idempotency_key(self, reg: Registry) -> None:
        """The same idempotency key returns the existing version, created=False, no write."""
        await reg.create_model("alice", "fraud")
        fields = {"artifact_uri": "s3://x/1", "sha256": SHA, "idempotency_key": "k1"}
        first, created = await reg.register_version("alice", "fraud", **fields)
        before = snapshot(reg.config.registry_db)
        again, created_again = await reg.register_version("alice", "fraud", **fields)
        assert (True, False) == (created, created_again)
        assert first == again
        assert before == snapshot(reg.config.registry_db)

    async def test_retry_with_run_and_digest(self, reg: Registry) -> None:
        """The same run_id + sha256 returns the existing version, even after tags changed."""
        await reg.create_model("alice", "fraud")
        fields = {"artifact_uri": "s3://x/1", "sha256": SHA, "run_id": "r1"}
        await reg.register_version("alice", "fraud", **fields)
        await reg.update_version("alice", "fraud", 1, tags={"new": "tag"})
        again, created = await reg.register_version("alice", "fraud", **fields, tags={"x": "y"})
        assert (False, 1, {"new": "tag"}) == (created, again["version"], again["tags"])
        # The retry wrote nothing: it answers with the registry's current revision.
        assert (3, 3) == (again["revision"], (await reg.counts())["events"])

    async def test_same_digest_other_run_is_a_new_version(self, reg: Registry) -> None:
        """The same digest from another run is a new version."""
        await reg.create_model("alice", "fraud")
        await reg.register_version("alice", "fraud", artifact_uri="s3://x", sha256=SHA, run_id="1")
        record, created = await reg.register_version(
            "alice", "fraud", artifact_uri="s3://x", sha256=SHA, run_id="2"
        )
        assert (True, 2) == (created, record["version"])

    async def test_key_reused_with_other_content(self, reg: Registry) -> None:
        """A retry with the same key but a different artifact raises AlreadyExists."""
        await reg.create_model("alice", "fraud")
        await reg.register_version(
            "alice", "fraud", artifact_uri="s3://x/1", sha256=SHA, idempotency_key="k1"
        )
        error = await unchanged(
            reg,
            lambda: reg.register_version(
                "alice", "fraud", artifact_uri="s3://x/1", sha256=SHA2, idempotency_key="k1"
            ),
            errors.AlreadyExists,
        )
        assert ("fraud", 1, "sha256") == (
            error.details["model"],
            error.details["version"],
            error.details["field"],
        )

    async def test_run_and_digest_with_other_content(self, reg: Registry) -> None:
        """Same run and digest but different metrics raises AlreadyExists."""
        await reg.create_model("alice", "fraud")
        await reg.register_version(
            "alice", "fraud", artifact_uri="s3://x", sha256=SHA, run_id="r", metrics={"a": 1}
        )
        await unchanged(
            reg,
            lambda: reg.register_version(
                "alice", "fraud", artifact_uri="s3://x", sha256=SHA, run_id="r", metrics={"a": 2}
            ),
            errors.AlreadyExists,
        )

    async def test_numbers_never_reused_after_archive(self, reg: Registry) -> None:
        """After archiving the highest version, the next one still gets a new number."""
        await seeded(reg, versions=2, approve=())
        await reg.archive("admin", "fraud", 2)
        record, _ = await reg.register_version("alice", "fraud", artifact_uri="s3://x", sha256=SHA)
        assert 3 == record["version"]

    async def test_update_version(self, reg: Registry) -> None:
        """update_version changes description and tags only; missing ones raise NotFound."""
        await seeded(reg, versions=1, approve=())
        updated = await reg.update_version("bob", "fraud", 1, description="new", tags={"a": "b"})
        assert ("new", {"a": "b"}, "s3://models/fraud/1") == (
            updated["description"],
            updated["tags"],
            updated["artifact"]["uri"],
        )
        await unchanged(
            reg, lambda: reg.update_version("bob", "fraud", 9, tags={}), errors.VersionNotFound
        )

    async def test_get_and_list_versions(self, reg: Registry) -> None:
        """list_versions pages in version order and filters by status."""
        await seeded(reg, versions=5, approve=(2, 4))
        page = await reg.list_versions("fraud", limit=2)
        assert [1, 2] == [r["version"] for r in page["items"]]
        rest = await reg.list_versions("fraud", limit=10, page_token=page["next_page_token"])
        assert ([3, 4, 5], None) == ([r["version"] for r in rest["items"]], rest["next_page_token"])
        approved = await reg.list_versions("fraud", status="approved")
        assert [2, 4] == [r["version"] for r in approved["items"]]
        with pytest.raises(errors.InvalidField):
            await reg.list_versions("fraud", status="golden")
        with pytest.raises(errors.VersionNotFound):
            await reg.get_version("fraud", 6)
        with pytest.raises(errors.InvalidField):
            await reg.get_version("fraud", 0)
        assert 3 == (await reg.get_version("fraud", "3"))["version"]


class TestDecide:
    async def test_approve_records_decision(self, reg: Registry) -> None:
        """Approving records who, when and why."""
        await seeded(reg, versions=1, approve=())
        record = await reg.decide("bob", "fraud", 1, True, "ship it")
        assert ("approved", "approved", "bob", "ship it") == (
            record["status"],
            record["decision"]["status"],
            record["decision"]["by"],
            record["decision"]["comment"],
        )

    async def test_reject(self, reg: Registry) -> None:
        """Rejecting moves registered -> rejected."""
        await seeded(reg, versions=1, approve=())
        record = await reg.decide("bob", "fraud", 1, False, "bad auc")
        assert ("rejected", "rejected") == (record["status"], record["decision"]["status"])

    @pytest.mark.parametrize("approve", [True, False])
    async def test_four_eyes(self, reg: Registry, approve: bool) -> None:
        """Whoever registered a version may not approve or reject it."""
        await seeded(reg, versions=1, approve=())
        error = await unchanged(
            reg, lambda: reg.decide("alice", "fraud", 1, approve), errors.FourEyesViolation
        )
        assert (1, "fraud") == (error.details["version"], error.details["model"])

    async def test_four_eyes_can_be_disabled(self, tmp_path: Path) -> None:
        """With four_eyes=False the registrant may approve."""
        async with Registry(CentralConfig(data_dir=tmp_path, four_eyes=False)) as registry:
            await seeded(registry, versions=1, approve=())
            assert "approved" == (await registry.decide("alice", "fraud", 1, True))["status"]

    @pytest.mark.parametrize(("first", "second"), [(True, True), (True, False), (False, True)])
    async def test_decided_version_cannot_be_decided_again(
        self, reg: Registry, first: bool, second: bool
    ) -> None:
        """approved/rejected are final: a second decision raises InvalidTransition."""
        await seeded(reg, versions=1, approve=())
        await reg.decide("bob", "fraud", 1, first)
        error = await unchanged(
            reg, lambda: reg.decide("carol", "fraud", 1, second), errors.InvalidTransition
        )
        assert ("registered", "approved" if first else "rejected") == (
            error.details["expected"],
            error.details["actual"],
        )

    async def test_archived_version_cannot_be_approved(self, reg: Registry) -> None:
        """Approving an archived version raises InvalidTransition."""
        await seeded(reg, versions=1, approve=())
        await reg.archive("admin", "fraud", 1)
        await unchanged(reg, lambda: reg.decide("bob", "fraud", 1, True), errors.InvalidTransition)

    async def test_approve_must_be_bool(self, reg: Registry) -> None:
        """approve must be a real bool."""
        await seeded(reg, versions=1, approve=())
        await unchanged(reg, lambda: reg.decide("bob", "fraud", 1, 1), errors.InvalidField)  # type: ignore[arg-type]


class TestArchive:
    async def test_archive_keeps_decision(self, reg: Registry) -> None:
        """Archiving records who and why and keeps the earlier decision."""
        await seeded(reg, versions=1, approve=(1,))
        record = await reg.archive("admin", "fraud", 1, "superseded")
        assert ("archived", "approved", "admin", "superseded") == (
            record["status"],
            record["decision"]["status"],
            record["archived"]["by"],
            record["archived"]["reason"],
        )

    async def test_version_in_use(self, reg: Registry) -> None:
        """Archiving a version an alias points at raises VersionInUse."""
        await seeded(reg)
        await reg.set_alias("dep", "fraud", "staging", 2)
        error = await unchanged(reg, lambda: reg.archive("admin", "fraud", 2), errors.VersionInUse)
        assert ["staging"] == error.details["aliases"]

    async def test_archive_twice(self, reg: Registry) -> None:
        """Archiving an archived version raises InvalidTransition."""
        await seeded(reg, versions=1, approve=())
        await reg.archive("admin", "fraud", 1)
        await unchanged(reg, lambda: reg.archive("admin", "fraud", 1), errors.InvalidTransition)

    async def test_latest_skips_archived(self, reg: Registry) -> None:
        """latest is the highest version that is not archived."""
        await seeded(reg)
        await reg.archive("admin", "fraud", 3)
        assert 2 == (await reg.get_model("fraud"))["latest"]["version"]
        assert 2 == (await reg.resolve("fraud", "latest"))["version"]["version"]
        await reg.archive("admin", "fraud", 2)
        await reg.archive("admin", "fraud", 1)
        assert None is (await reg.get_model("fraud"))["latest"]
        with pytest.raises(errors.VersionNotFound):
            await reg.resolve("fraud", "latest")


class TestAliases:
    async def test_set_and_get(self, reg: Registry) -> None:
        """set_alias returns the move; get_alias and the version record show it."""
        await seeded(reg)
        move = await reg.set_alias("dep", "fraud", "production", 1, reason="launch")
        assert {
            "model": "fraud",
            "alias": "production",
            "from_version": None,
            "to_version": 1,
            "actor": "dep",
            "reason": "launch",
            "action": "set",
            "revision": 7,
        } == {k: v for k, v in move.items() if k not in ("at", "revision_hash")}
        alias = await reg.get_alias("fraud", "production")
        assert {
            "model": "fraud",
            "alias": "production",
            "version": 1,
            "updated_by": "dep",
            "updated_at": move["at"],
            "revision": 7,
            "revision_hash": move["revision_hash"],
        } == alias
        assert ["production"] == (await reg.get_version("fraud", 1))["aliases"]
        assert {"production": 1} == (await reg.get_model("fraud"))["aliases"]

    async def test_compare_and_set(self, reg: Registry) -> None:
        """expected must equal the current target; a mismatch raises AliasConflict."""
        await seeded(reg)
        await reg.set_alias("dep", "fraud", "staging", 1, expected=None)
        error = await unchanged(
            reg,
            lambda: reg.set_alias("dep", "fraud", "staging", 2, expected=3),
            errors.AliasConflict,
        )
        assert (3, 1) == (error.details["expected"], error.details["actual"])
        await unchanged(
            reg,
            lambda: reg.set_alias("dep", "fraud", "staging", 2, expected=None),
            errors.AliasConflict,
        )
        move = await reg.set_alias("dep", "fraud", "staging", 2, expected=1)
        assert (1, 2) == (move["from_version"], move["to_version"])
        moved = await reg.set_alias("dep", "fraud", "staging", 3, expected=UNSET)
        assert 3 == moved["to_version"]

    async def test_expected_none_on_set_alias_fails(self, reg: Registry) -> None:
        """expected=None on an alias that is set raises AliasConflict with actual."""
        await seeded(reg)
        await reg.set_alias("dep", "fraud", "staging", 1)
        error = await unchanged(
            reg,
            lambda: reg.set_alias("dep", "fraud", "staging", 2, expected=None),
            errors.AliasConflict,
        )
        assert (None, 1) == (error.details["expected"], error.details["actual"])

    async def test_protected_alias_needs_approved_version(self, reg: Registry) -> None:
        """production accepts only approved versions (NotApproved otherwise)."""
        await seeded(reg)
        error = await unchanged(
            reg, lambda: reg.set_alias("dep", "fraud", "production", 2), errors.NotApproved
        )
        assert ("registered", "production") == (error.details["actual"], error.details["alias"])
        await reg.set_alias("dep", "fraud", "staging", 2)

    async def test_configured_protected_aliases(self, tmp_path: Path) -> None:
        """protected_aliases from the config replaces the default."""
        config = CentralConfig(data_dir=tmp_path, protected_aliases=("prod-eu",))
        async with Registry(config) as registry:
            await seeded(registry)
            await registry.set_alias("dep", "fraud", "production", 2)
            with pytest.raises(errors.NotApproved):
                await registry.set_alias("dep", "fraud", "prod-eu", 2)
            assert registry.is_protected("prod-eu")

    async def test_archived_version_cannot_be_target(self, reg: Registry) -> None:
        """An alias cannot point at an archived version."""
        await seeded(reg)
        await reg.archive("admin", "fraud", 2)
        await unchanged(
            reg, lambda: reg.set_alias("dep", "fraud", "staging", 2), errors.InvalidTransition
        )

    async def test_missing_version_or_model(self, reg: Registry) -> None:
        """Pointing at a missing version or model raises the NotFound class."""
        await seeded(reg)
        await unchanged(
            reg, lambda: reg.set_alias("dep", "fraud", "staging", 9), errors.VersionNotFound
        )
        await unchanged(
            reg, lambda: reg.set_alias("dep", "ghost", "staging", 1), errors.ModelNotFound
        )

    @pytest.mark.parametrize("alias", ["latest", "12", "Prod", "", "a b"])
    async def test_invalid_alias_names(self, reg: Registry, alias: str) -> None:
        """Reserved or malformed alias names raise InvalidName."""
        await seeded(reg)
        await unchanged(reg, lambda: reg.set_alias("dep", "fraud", alias, 1), errors.InvalidName)

    @pytest.mark.parametrize("expected", [0, -1, "x", 1.5, True])
    async def test_invalid_expected(self, reg: Registry, expected: Any) -> None:
        """expected must be UNSET, None or a version number."""
        await seeded(reg)
        await unchanged(
            reg,
            lambda: reg.set_alias("dep", "fraud", "staging", 1, expected=expected),
            errors.InvalidField,
        )

    async def test_delete(self, reg: Registry) -> None:
        """delete_alias unsets the alias and records the move; CAS applies."""
        await seeded(reg)
        await reg.set_alias("dep", "fraud", "staging", 1)
        await unchanged(
            reg,
            lambda: reg.delete_alias("dep", "fraud", "staging", expected=2),
            errors.AliasConflict,
        )
        move = await reg.delete_alias("dep", "fraud", "staging", expected=1, reason="done")
        assert (1, None, "delete") == (move["from_version"], move["to_version"], move["action"])
        with pytest.raises(errors.AliasNotFound):
            await reg.get_alias("fraud", "staging")
        await unchanged(
            reg, lambda: reg.delete_alias("dep", "fraud", "staging"), errors.AliasNotFound
        )

    async def test_history_newest_first_with_pages(self, reg: Registry) -> None:
        """alias_history lists every move, newest first, in pages."""
        await seeded(reg)
        await reg.set_alias("dep", "fraud", "staging", 1)
        await reg.set_alias("dep", "fraud", "staging", 2)
        await reg.delete_alias("dep", "fraud", "staging")
        await reg.set_alias("dep", "fraud", "staging", 3)
        page = await reg.alias_history("fraud", "staging", limit=3)
        moves = [(m["action"], m["from_version"], m["to_version"]) for m in page["items"]]
        assert [("set", None, 3), ("delete", 2, None), ("set", 1, 2)] == moves
        rest = await reg.alias_history("fraud", "staging", page_token=page["next_page_token"])
        assert ([("set", None, 1)], None) == (
            [(m["action"], m["from_version"], m["to_version"]) for m in rest["items"]],
            rest["next_page_token"],
        )
        assert [] == (await reg.alias_history("fraud", "canary"))["items"]

    async def test_point_in_time(self, reg: Registry) -> None:
        """get_alias(at=) answers what the alias pointed at then, from history."""
        await seeded(reg)
        before = datetime.now(UTC) - timedelta(seconds=1)
        m1 = await reg.set_alias("dep", "fraud", "staging", 1)
        m2 = await reg.set_alias("dep", "fraud", "staging", 2)
        m3 = await reg.delete_alias("dep", "fraud", "staging")
        m4 = await reg.set_alias("dep", "fraud", "staging", 3)
        with pytest.raises(errors.AliasNotFound):
            await reg.get_alias("fraud", "staging", at=before)
        assert 1 == (await reg.get_alias("fraud", "staging", at=m1["at"]))["version"]
        at2 = await reg.get_alias("fraud", "staging", at=m2["at"])
        assert (2, m2["revision"], "dep") == (at2["version"], at2["revision"], at2["updated_by"])
        with pytest.raises(errors.AliasNotFound):
            await reg.get_alias("fraud", "staging", at=m3["at"])
        assert 3 == (await reg.get_alias("fraud", "staging", at=m4["at"]))["version"]
        assert 3 == (await reg.get_alias("fraud", "staging", at=datetime.now(UTC)))["version"]
        resolved = await reg.resolve("fraud", "staging", at=m2["at"])
        assert 2 == resolved["version"]["version"]

    @pytest.mark.parametrize("at", ["yesterday", "2026-13-01T00:00:00Z", 5])
    async def test_bad_point_in_time(self, reg: Registry, at: Any) -> None:
        """An at that is not an RFC 3339 time raises InvalidField(at)."""
        await seeded(reg)
        with pytest.raises(errors.InvalidField) as info:
            await reg.get_alias("fraud", "staging", at=at)
        assert "at" == info.value.details["field"]


class TestRollback:
    async def test_rolls_back_to_previous_approved(self, reg: Registry) -> None:
        """Rollback re-points to the previous target that is still approved."""
        await seeded(reg, versions=3, approve=(1, 2, 3))
        for n in (1, 2, 3):
            await reg.set_alias("dep", "fraud", "production", n)
        move = await reg.rollback_alias("dep", "fraud", "production", "bad release")
        assert (3, 2, "rollback", "bad release") == (
            move["from_version"],
            move["to_version"],
            move["action"],
            move["reason"],
        )
        second = await reg.rollback_alias("dep", "fraud", "production")
        assert (2, 1) == (second["from_version"], second["to_version"])
        await unchanged(
            reg, lambda: reg.rollback_alias("dep", "fraud", "production"), errors.NothingToRollBack
        )

    async def test_rolled_back_version_is_not_a_target_again(self, reg: Registry) -> None:
        """A version rolled back from is off the alias's stack: later rollbacks skip it."""
        await seeded(reg, versions=4, approve=(1, 2, 3, 4))
        for n in (1, 2, 3):
            await reg.set_alias("dep", "fraud", "production", n)
        await reg.rollback_alias("dep", "fraud", "production")
        await reg.set_alias("dep", "fraud", "production", 4)
        move = await reg.rollback_alias("dep", "fraud", "production")
        assert (4, 2) == (move["from_version"], move["to_version"])

    async def test_skips_targets_no_longer_approved(self, reg: Registry) -> None:
        """Earlier targets that are not approved (or archived) are skipped."""
        await seeded(reg, versions=4, approve=(1, 4))
        for n in (1, 2, 3, 4):
            await reg.set_alias("dep", "fraud", "staging", n)
        await reg.set_alias("dep", "fraud", "canary", 1)
        await reg.set_alias("dep", "fraud", "canary", 4)
        move = await reg.rollback_alias("dep", "fraud", "staging")
        assert 1 == move["to_version"]

    async def test_archived_earlier_target_is_skipped(self, reg: Registry) -> None:
        """An approved but since archived earlier target is skipped."""
        await seeded(reg, versions=3, approve=(1, 2, 3))
        for n in (1, 2, 3):
            await reg.set_alias("dep", "fraud", "production", n)
        await reg.archive("admin", "fraud", 2)
        assert 1 == (await reg.rollback_alias("dep", "fraud", "production"))["to_version"]

    async def test_rollback_restores_deleted_alias(self, reg: Registry) -> None:
        """After a delete, rollback points the alias at its last approved target again."""
        await seeded(reg)
        await reg.set_alias("dep", "fraud", "production", 1)
        await reg.set_alias("dep", "fraud", "production", 3)
        await reg.delete_alias("dep", "fraud", "production")
        move = await reg.rollback_alias("dep", "fraud", "production")
        assert (None, 3) == (move["from_version"], move["to_version"])

    async def test_never_set_alias(self, reg: Registry) -> None:
        """Rolling back an alias that never existed raises AliasNotFound."""
        await seeded(reg)
        await unchanged(
            reg, lambda: reg.rollback_alias("dep", "fraud", "production"), errors.AliasNotFound
        )

    async def test_single_target(self, reg: Registry) -> None:
        """An alias with only one target has nothing to roll back to."""
        await seeded(reg)
        await reg.set_alias("dep", "fraud", "production", 1)
        await reg.set_alias("dep", "fraud", "production", 1)
        await unchanged(
            reg, lambda: reg.rollback_alias("dep", "fraud", "production"), errors.NothingToRollBack
        )


class TestResolve:
    async def test_refs(self, reg: Registry) -> None:
        """A ref is an alias, a version number or latest."""
        await seeded(reg)
        await reg.set_alias("dep", "fraud", "production", 1)
        answers = [
            (await reg.resolve("fraud", ref))["version"]["version"]
            for ref in ("production", "2", "latest")
        ]
        assert [1, 2, 3] == answers
        assert {"model": "fraud", "ref": "production"} == {
            k: v for k, v in (await reg.resolve("fraud", "production")).items() if k != "version"
        }

    async def test_missing_refs(self, reg: Registry) -> None:
        """Unknown aliases, versions and models raise their NotFound class."""
        await seeded(reg)
        for ref, exc in (
            ("canary", errors.AliasNotFound),
            ("9", errors.VersionNotFound),
        ):
            with pytest.raises(exc):
                await reg.resolve("fraud", ref)
        with pytest.raises(errors.ModelNotFound):
            await reg.resolve("ghost", "latest")
        for bad in ("Prod", "", "0"):
            with pytest.raises(errors.InvalidRequest):
                await reg.resolve("fraud", bad)

    async def test_latest_at_a_time(self, reg: Registry) -> None:
        """latest at a time ignores versions registered later and archived before."""
        await seeded(reg, versions=2, approve=())
        at_two = (await reg.get_version("fraud", 2))["created_at"]
        await reg.register_version("alice", "fraud", artifact_uri="s3://x", sha256=SHA)
        assert 3 == (await reg.resolve("fraud", "latest"))["version"]["version"]
        assert 2 == (await reg.resolve("fraud", "latest", at=at_two))["version"]["version"]
        with pytest.raises(errors.VersionNotFound):
            await reg.resolve("fraud", "3", at=at_two)
        archived = await reg.archive("admin", "fraud", 3)
        assert (
            3
            == (await reg.resolve("fraud", "latest", at=archived["created_at"]))["version"][
                "version"
            ]
        )
        assert (
            2
            == (await reg.resolve("fraud", "latest", at=archived["archived"]["at"]))["version"][
                "version"
            ]
        )


class TestSearch:
    async def test_filters(self, reg: Registry) -> None:
        """Each filter narrows the search; filters combine."""
        await reg.create_model("alice", "a")
        await reg.create_model("alice", "b")
        await reg.register_version(
            "alice", "a", artifact_uri="s3://1", sha256=SHA, run_id="r1", tags={"env": "x"}
        )
        await reg.register_version(
            "alice", "a", artifact_uri="s3://2", sha256=SHA2, tags={"env": "y", "k": "v"}
        )
        await reg.register_version("alice", "b", artifact_uri="s3://3", sha256=SHA, run_id="r1")
        middle = (await reg.get_version("a", 2))["created_at"]
        await reg.decide("bob", "a", 2, True)
        await reg.set_alias("dep", "b", "staging", 1)

        async def found(**filters: Any) -> list[tuple[str, int]]:
            page = await reg.search_versions(**filters)
            return [(r["model"], r["version"]) for r in page["items"]]

        assert [("a", 1), ("a", 2), ("b", 1)] == await found()
        assert [("b", 1)] == await found(model="b")
        assert [("a", 2)] == await found(status="approved")
        assert [("a", 2)] == await found(tags={"env": "y"})
        assert [] == await found(tags={"env": "y", "k": "w"})
        assert [("a", 1), ("b", 1)] == await found(run_id="r1")
        assert [("b", 1)] == await found(alias="staging")
        assert [("a", 2), ("b", 1)] == await found(created_after=middle)
        assert [("a", 1)] == await found(created_before=middle)
        assert [("b", 1)] == await found(run_id="r1", created_after=middle)
        assert [] == await found(model="ghost")

    async def test_pages_never_skip_or_repeat(self, reg: Registry) -> None:
        """Rows added between pages neither shift nor repeat what a reader sees."""
        await reg.create_model("alice", "b")
        for _ in range(4):
            await reg.register_version("alice", "b", artifact_uri="s3://x", sha256=SHA)
        first = await reg.search_versions(limit=2)
        await reg.create_model("alice", "a")
        await reg.register_version("alice", "a", artifact_uri="s3://x", sha256=SHA)
        await reg.register_version("alice", "b", artifact_uri="s3://x", sha256=SHA)
        seen = [(r["model"], r["version"]) for r in first["items"]]
        token = first["next_page_token"]
        while token is not None:
            page = await reg.search_versions(limit=2, page_token=token)
            seen += [(r["model"], r["version"]) for r in page["items"]]
            token = page["next_page_token"]
        assert [("b", 1), ("b", 2), ("b", 3), ("b", 4), ("b", 5)] == seen

    async def test_bad_filters(self, reg: Registry) -> None:
        """Bad filter values raise InvalidRequest classes naming the field."""
        for filters, field in (
            ({"status": "gold"}, "status"),
            ({"model": "A"}, "model"),
            ({"tags": {"k": 1}}, "tag"),
            ({"created_after": "soon"}, "created_after"),
            ({"alias": "latest"}, "alias"),
        ):
            with pytest.raises(errors.InvalidRequest) as info:
                await reg.search_versions(**filters)
            assert field == info.value.details["field"]


class TestEvents:
    async def test_every_write_appends_one_event(self, reg: Registry) -> None:
        """Each mutation appends exactly one event with the returned revision."""
        await seeded(reg)
        move = await reg.set_alias("dep", "fraud", "production", 1)
        page = await reg.events(limit=1000)
        actions = [(e["revision"], e["action"], e["subject"], e["actor"]) for e in page["items"]]
        assert [
            (1, "model.create", "fraud", "alice"),
            (2, "version.register", "fraud/1", "alice"),
            (3, "version.register", "fraud/2", "alice"),
            (4, "version.register", "fraud/3", "alice"),
            (5, "version.approve", "fraud/1", "bob"),
            (6, "version.approve", "fraud/3", "bob"),
            (7, "alias.set", "fraud@production", "dep"),
        ] == actions
        assert 7 == move["revision"] == await reg.revision()
        assert {"from_version": None, "to_version": 1, "reason": ""} == page["items"][-1]["details"]

    async def test_pages_by_after_and_token(self, reg: Registry) -> None:
        """events pages by after= and by next_page_token."""
        await seeded(reg)
        first = await reg.events(after=2, limit=2)
        assert [3, 4] == [e["revision"] for e in first["items"]]
        rest = await reg.events(page_token=first["next_page_token"], limit=10)
        assert ([5, 6], None) == ([e["revision"] for e in rest["items"]], rest["next_page_token"])
        for bad in (-1, "3", True, 2**63):
            with pytest.raises(errors.InvalidField):
                await reg.events(after=bad)

    async def test_counts(self, reg: Registry) -> None:
        """counts() reports models, versions, aliases and events."""
        await seeded(reg)
        await reg.set_alias("dep", "fraud", "production", 1)
        assert {"models": 1, "versions": 3, "aliases": 1, "events": 7} == await reg.counts()


class TestConcurrency:
    async def test_concurrent_compare_and_set(self, reg: Registry) -> None:
        """Two concurrent moves with the same expected: one wins, one conflicts, one move."""
        await seeded(reg)
        await reg.set_alias("dep", "fraud", "production", 1)
        results = await asyncio.gather(
            reg.set_alias("ann", "fraud", "production", 3, expected=1),
            reg.set_alias("ben", "fraud", "production", 3, expected=1),
            return_exceptions=True,
        )
        wins = [r for r in results if isinstance(r, dict)]
        conflicts = [r for r in results if isinstance(r, errors.AliasConflict)]
        assert (1, 1) == (len(wins), len(conflicts))
        assert (1, 3) == (conflicts[0].details["expected"], conflicts[0].details["actual"])
        history = (await reg.alias_history("fraud", "production"))["items"]
        assert [(1, 3), (None, 1)] == [(m["from_version"], m["to_version"]) for m in history]

    async def test_many_concurrent_registrations(self, reg: Registry) -> None:
        """Concurrent registrations all commit with distinct numbers and revisions."""
        await reg.create_model("alice", "fraud")
        results = await asyncio.gather(
            *(
                reg.register_version("alice", "fraud", artifact_uri=f"s3://x/{i}", sha256=SHA)
                for i in range(300)
            )
        )
        assert list(range(1, 301)) == sorted(r["version"] for r, _ in results)
        assert list(range(2, 302)) == sorted(r["revision"] for r, _ in results)
        assert (True, 301) == ((await reg.verify_audit())["ok"], await reg.revision())

    async def test_failing_write_does_not_roll_back_neighbours(self, reg: Registry) -> None:
        """In one batch, failing writes leave no trace and the others all commit."""
        await seeded(reg)
        calls = []
        for i in range(40):
            if i % 3 == 0:
                calls.append(reg.set_alias("dep", "fraud", "production", 2))  # NotApproved
            else:
                calls.append(
                    reg.register_version("alice", "fraud", artifact_uri=f"s3://{i}", sha256=SHA)
                )
        results = await asyncio.gather(*calls, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        assert 14 == len(failed)
        assert all(isinstance(r, errors.NotApproved) for r in failed)
        assert {"models": 1, "versions": 3 + 26, "aliases": 0, "events": 6 + 26} == (
            await reg.counts()
        )
        assert (await reg.verify_audit())["ok"]

    async def test_driver_error_is_isolated_and_hidden(self, reg: Registry) -> None:
        """A write failing inside SQLite raises an internal error without the driver
        message, and its neighbours commit."""

        def broken(conn: sqlite3.Connection, ctx: Any) -> None:
            ctx.append_event(conn, "x", "test", "s", {})
            conn.execute("INSERT INTO models (id, name) VALUES (NULL, NULL)")

        results = await asyncio.gather(
            reg.create_model("alice", "a"),
            reg.store.write(broken),
            reg.create_model("alice", "b"),
            return_exceptions=True,
        )
        error = results[1]
        assert isinstance(error, errors.RegistryError)
        assert "internal" == error.code
        assert "NOT NULL" not in error.message
        assert [1, 2] == sorted(r["revision"] for r in (results[0], results[2]))  # type: ignore[index]
        assert (True, 2) == ((await reg.verify_audit())["ok"], await reg.revision())


#: Strings a JSON body can carry that are easy to get wrong: a lone surrogate (JSON allows the
#: escape, UTF-8 cannot encode it), NUL, a bad scheme, a valid digest.
TRICKY = st.sampled_from(["\ud800", "x\udfffy", "\x00", "s3://x/\ud800", "ftp://x", "a" * 64])
STRINGS = st.text(max_size=20) | TRICKY
#: Any value a JSON body can carry, with integers beyond 64 bits and NaN/infinity.
ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | STRINGS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(STRINGS, inner, max_size=4),
    max_leaves=12,
)
FIELDS = sorted(
    {
        "artifact_uri",
        "sha256",
        "size",
        "format",
        "run_id",
        "commit",
        "dataset_uri",
        "dataset_digest",
        "parent_version",
        "params",
        "metrics",
        "tags",
        "description",
        "idempotency_key",
    }
)


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[tuple[asyncio.AbstractEventLoop, Registry]]:
    """One registry (and the loop it runs on) kept across a Hypothesis test's examples."""
    loop = asyncio.new_event_loop()
    registry = Registry(CentralConfig(data_dir=tmp_path))
    loop.run_until_complete(registry.open())
    loop.run_until_complete(registry.create_model("alice", "fraud"))
    try:
        yield loop, registry
    finally:
        loop.run_until_complete(registry.close())
        loop.close()


class TestArbitraryInput:
    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(
        # Few fields, often plain strings: one bad field must not always hide the next.
        fields=st.dictionaries(st.sampled_from([*FIELDS, "extra"]), STRINGS | ANY_JSON, max_size=3),
        good=st.booleans(),
    )
    def test_registration_never_crashes(
        self,
        shared: tuple[asyncio.AbstractEventLoop, Registry],
        fields: dict[str, Any],
        good: bool,
    ) -> None:
        """Any field values either register or raise a RegistryError; the chain stays intact."""
        loop, registry = shared
        if good:  # mostly-valid bodies reach the rules, not only the first check
            fields = {"artifact_uri": "s3://x/y", "sha256": SHA, **fields}

        async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
            try:
                record, _ = await registry.register_version("alice", "fraud", **fields)
            except errors.RegistryError as exc:
                assert exc.status < 500, repr(exc)
            else:
                stored = await registry.get_version("fraud", record["version"])
                assert {
                    k: v for k, v in record.items() if k not in ("revision", "revision_hash")
                } == stored
            return await registry.verify_audit(), await registry.counts()

        result, counts = loop.run_until_complete(scenario())
        assert (True, counts["events"]) == (result["ok"], result["checked"])

    @settings(
        max_examples=200,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(data=st.data())
    def test_any_method_any_argument(
        self, shared: tuple[asyncio.AbstractEventLoop, Registry], data: st.DataObject
    ) -> None:
        """Every method answers any argument values with a result or a RegistryError."""
        loop, registry = shared
        name = data.draw(st.sampled_from(sorted(SIGNATURES)))
        args = {
            slot: data.draw(st.sampled_from(PLAUSIBLE[slot]) | STRINGS | ANY_JSON, label=slot)
            for slot in SIGNATURES[name]
        }

        async def scenario() -> dict[str, Any]:
            await registry.register_version("alice", "fraud", artifact_uri="s3://x", sha256=SHA)
            try:
                await getattr(registry, name)(**args)
            except errors.RegistryError as exc:
                assert exc.status < 500, repr(exc)
            return await registry.verify_audit()

        assert loop.run_until_complete(scenario())["ok"]


#: Arguments of each Registry method, by name.
SIGNATURES: dict[str, tuple[str, ...]] = {
    "create_model": ("actor", "name", "description", "owner", "tags"),
    "update_model": ("actor", "name", "description", "owner", "tags"),
    "get_model": ("name",),
    "get_version": ("model", "version"),
    "update_version": ("actor", "model", "version", "description", "tags"),
    "decide": ("actor", "model", "version", "approve", "comment"),
    "archive": ("actor", "model", "version", "reason"),
    "set_alias": ("actor", "model", "alias", "version", "expected", "reason"),
    "delete_alias": ("actor", "model", "alias", "expected", "reason"),
    "rollback_alias": ("actor", "model", "alias", "reason"),
    "get_alias": ("model", "alias", "at"),
    "alias_history": ("model", "alias", "limit", "page_token"),
    "resolve": ("model", "ref", "at"),
    "list_models": ("prefix", "limit", "page_token"),
    "list_versions": ("model", "status", "limit", "page_token"),
    "search_versions": (
        "model",
        "status",
        "tags",
        "run_id",
        "alias",
        "created_after",
        "created_before",
        "limit",
        "page_token",
    ),
    "events": ("after", "limit", "page_token"),
}
#: Values that pass validation, so that calls also reach the rules and the queries.
PLAUSIBLE: dict[str, list[Any]] = {
    "actor": ["alice", "bob"],
    "name": ["fraud", "churn"],
    "model": ["fraud", "churn"],
    "description": ["d"],
    "owner": ["o"],
    "tags": [{"a": "b"}, None],
    "version": [1, 2, "1"],
    "approve": [True, False],
    "comment": ["c"],
    "reason": ["r"],
    "alias": ["production", "staging"],
    "expected": [None, 1, UNSET],
    "at": ["2020-01-01T00:00:00Z", datetime.now(UTC), None],
    "ref": ["latest", "1", "staging"],
    "limit": [1, 1000],
    "page_token": [None, encode_token("search", ["fraud", 1]), encode_token("versions", 1)],
    "prefix": ["fr", None],
    "status": ["approved", None],
    "run_id": ["r1", None],
    "created_after": ["2020-01-01T00:00:00Z", None],
    "created_before": [None],
    "after": [0, 5],
}
