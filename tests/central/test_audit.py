"""The event hash chain: tampering with the database file is detected and located."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelreg.central import audit
from modelreg.central.config import CentralConfig
from modelreg.central.records import canonical_json
from modelreg.central.registry import Registry

EVENTS = 8


@pytest.fixture
async def populated(tmp_path: Path) -> AsyncIterator[Path]:
    """A closed registry.db with :data:`EVENTS` events of several kinds."""
    config = CentralConfig(data_dir=tmp_path)
    async with Registry(config) as reg:
        await reg.create_model("alice", "fraud", tags={"team": "risk"})
        for n in (1, 2):
            await reg.register_version(
                "alice", "fraud", artifact_uri=f"s3://m/{n}", sha256=f"{n:064x}", run_id=f"r{n}"
            )
        await reg.decide("bob", "fraud", 1, True, "ok")
        await reg.decide("bob", "fraud", 2, True, "ok")
        await reg.set_alias("dep", "fraud", "production", 1)
        await reg.set_alias("dep", "fraud", "production", 2, expected=1)
        await reg.rollback_alias("dep", "fraud", "production", "bad")
        assert EVENTS == await reg.revision()
    return config.registry_db


def tamper(path: Path, sql: str, *args: object) -> None:
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute(sql, args)
    finally:
        conn.close()


async def verify(path: Path) -> dict[str, object]:
    async with Registry(CentralConfig(data_dir=path.parent)) as reg:
        return await reg.verify_audit()


class TestIntactChain:
    async def test_untouched_chain_verifies(self, populated: Path) -> None:
        """An untouched log verifies, every row checked."""
        result = await verify(populated)
        assert {
            "ok": True,
            "checked": EVENTS,
            "revision": EVENTS,
            "first_bad_revision": None,
        } == {k: v for k, v in result.items() if k != "message"}

    async def test_empty_chain_verifies(self, tmp_path: Path) -> None:
        """A registry without events verifies with nothing checked."""
        async with Registry(CentralConfig(data_dir=tmp_path)) as reg:
            result = await reg.verify_audit()
        assert (True, 0, None) == (result["ok"], result["checked"], result["first_bad_revision"])

    async def test_hashes_follow_the_documented_formula(self, populated: Path) -> None:
        """Each stored hash is sha256(prev_hash + canonical event), the first prev is zeros."""
        conn = sqlite3.connect(populated)
        try:
            rows = conn.execute(
                "SELECT revision, at, actor, action, subject, details, prev_hash, hash"
                " FROM events ORDER BY revision"
            ).fetchall()
        finally:
            conn.close()
        prev = "0" * 64
        for revision, at, actor, action, subject, details, prev_hash, digest in rows:
            body = canonical_json(
                {
                    "revision": revision,
                    "at": at,
                    "actor": actor,
                    "action": action,
                    "subject": subject,
                    "details": json.loads(details),
                }
            )
            assert (prev, hashlib.sha256((prev + body).encode()).hexdigest()) == (
                prev_hash,
                digest,
            )
            prev = digest


class TestTampering:
    @pytest.mark.parametrize("revision", [1, 4, EVENTS])
    @pytest.mark.parametrize(
        ("column", "value"),
        [
            ("actor", "mallory"),
            ("at", "2020-01-01T00:00:00.000000Z"),
            ("action", "alias.delete"),
            ("subject", "other"),
            ("details", '{"forged":true}'),
            ("hash", "f" * 64),
            ("prev_hash", "e" * 64),
        ],
    )
    async def test_edited_column_is_named(
        self, populated: Path, revision: int, column: str, value: str
    ) -> None:
        """Editing any column of any event row fails verification at that revision."""
        tamper(populated, f"UPDATE events SET {column} = ? WHERE revision = ?", value, revision)
        result = await verify(populated)
        assert (False, revision) == (result["ok"], result["first_bad_revision"])
        assert f"revision {revision}" in str(result["message"])

    async def test_edit_keeping_the_meaning_is_detected(self, populated: Path) -> None:
        """Re-serialising details (same JSON, other spacing) is still tampering."""
        tamper(
            populated,
            "UPDATE events SET details = ? WHERE revision = 1",
            '{"description": "", "owner": "", "tags": {"team": "risk"}}',
        )
        assert 1 == (await verify(populated))["first_bad_revision"]

    async def test_rehashed_row_breaks_the_next_link(self, populated: Path) -> None:
        """A forger who recomputes the edited row's hash is caught at the next row."""
        conn = sqlite3.connect(populated)
        try:
            row = conn.execute(
                "SELECT revision, at, action, subject, details, prev_hash FROM events"
                " WHERE revision = 3"
            ).fetchone()
            revision, at, action, subject, details, prev_hash = row
            forged = audit.event_hash(
                prev_hash, revision, at, "mallory", action, subject, json.loads(details)
            )
            with conn:
                conn.execute(
                    "UPDATE events SET actor = 'mallory', hash = ? WHERE revision = 3", (forged,)
                )
        finally:
            conn.close()
        assert 4 == (await verify(populated))["first_bad_revision"]

    async def test_deleted_row_is_named(self, populated: Path) -> None:
        """Deleting an event row fails at the revision that went missing."""
        tamper(populated, "DELETE FROM events WHERE revision = 5")
        assert 5 == (await verify(populated))["first_bad_revision"]

    async def test_details_not_an_object(self, populated: Path) -> None:
        """details that is not a JSON object fails at that revision."""
        tamper(populated, "UPDATE events SET details = '[1]' WHERE revision = 2")
        assert 2 == (await verify(populated))["first_bad_revision"]

    async def test_wrong_type_is_named(self, populated: Path) -> None:
        """A column rewritten with a non-text value fails at that revision."""
        tamper(populated, "UPDATE events SET at = 12 WHERE revision = 6")
        assert 6 == (await verify(populated))["first_bad_revision"]

    async def test_truncated_tail_is_named(self, tmp_path: Path) -> None:
        """Rows cut off the end of the log are caught by the heartbeat's revision."""
        async with Registry(CentralConfig(data_dir=tmp_path)) as reg:
            for name in ("a", "b", "c"):
                await reg.create_model("alice", name)
            await reg.heartbeat()
            tamper(reg.config.registry_db, "DELETE FROM events WHERE revision >= 2")
            result = await reg.verify_audit()
        assert (False, 2, 1) == (result["ok"], result["first_bad_revision"], result["checked"])

    async def test_bytes_that_are_not_utf8_are_named(self, populated: Path) -> None:
        """A column rewritten with bytes that are not UTF-8 fails at that revision."""
        tamper(populated, "UPDATE events SET actor = CAST(X'FF41' AS TEXT) WHERE revision = 3")
        assert 3 == (await verify(populated))["first_bad_revision"]


class TestChunks:
    @pytest.mark.parametrize("limit", [1, 3, 4, EVENTS, 100])
    def test_chunked_answer_equals_whole(self, populated: Path, limit: int) -> None:
        """Verifying in chunks of any size gives the same answer as in one pass."""
        conn = sqlite3.connect(populated)
        try:
            whole = audit.verify(conn)
            verifier = audit.Verifier()
            while (chunked := verifier.step(conn, limit)) is None:
                pass
        finally:
            conn.close()
        assert whole == chunked

    @pytest.mark.parametrize("bad", [3, 4, 5])
    def test_tampering_at_a_chunk_boundary(self, populated: Path, bad: int) -> None:
        """A row edited just before, at or after a chunk boundary is named."""
        tamper(populated, "UPDATE events SET actor = 'mallory' WHERE revision = ?", bad)
        conn = sqlite3.connect(populated)
        try:
            verifier = audit.Verifier()
            while (result := verifier.step(conn, 4)) is None:
                pass
        finally:
            conn.close()
        assert (False, bad) == (result["ok"], result["first_bad_revision"])

    def test_deleted_first_row_of_a_chunk(self, populated: Path) -> None:
        """A gap exactly at a chunk boundary names the missing revision."""
        tamper(populated, "DELETE FROM events WHERE revision = 5")
        conn = sqlite3.connect(populated)
        try:
            verifier = audit.Verifier()
            while (result := verifier.step(conn, 4)) is None:
                pass
        finally:
            conn.close()
        assert 5 == result["first_bad_revision"]
