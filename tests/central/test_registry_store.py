"""The store's one write path: group commit, isolation, acknowledgement, lifecycle."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from modelreg import errors
from modelreg.central import audit, store
from modelreg.central.store import Store, WriteContext


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Store]:
    opened = Store(tmp_path / "registry.db")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def add_model(name: str) -> Any:
    """A write function creating model ``name`` with its event; returns the revision."""

    def fn(conn: sqlite3.Connection, ctx: WriteContext) -> int:
        conn.execute(
            "INSERT INTO models (name, created_by, created_at, updated_at) VALUES (?, 'x', ?, ?)",
            (name, ctx.at, ctx.at),
        )
        return ctx.append_event(conn, "x", "model.create", name, {})

    return fn


def names(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT name FROM models ORDER BY name")]
    finally:
        conn.close()


class TestGroupCommit:
    async def test_concurrent_writes_share_transactions(self, db: Store) -> None:
        """Writes queued together commit in fewer transactions than there are writes."""
        assert db._conn is not None
        commits: list[str] = []
        db._conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
        revisions = await asyncio.gather(*(db.write(add_model(f"m{i:03d}")) for i in range(200)))
        db._conn.set_trace_callback(None)
        assert list(range(1, 201)) == sorted(revisions)
        assert len(commits) < 200

    async def test_batches_are_capped(self, db: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        """No transaction carries more than MAX_BATCH writes."""
        monkeypatch.setattr(store, "MAX_BATCH", 7)
        sizes: list[int] = []
        run = db._run_batch

        def counting(fns: list[Any]) -> list[Any]:
            sizes.append(len(fns))
            return run(fns)

        monkeypatch.setattr(db, "_run_batch", counting)
        await asyncio.gather(*(db.write(add_model(f"m{i:02d}")) for i in range(30)))
        assert (30, 7) == (sum(sizes), max(sizes))

    async def test_read_sees_acknowledged_write(self, db: Store) -> None:
        """Once write() returns, every read connection sees the write."""
        for i in range(20):
            await db.write(add_model(f"m{i:02d}"))
            count = await db.read(lambda c: c.execute("SELECT count(*) FROM models").fetchone()[0])
            assert i + 1 == count


class TestIsolation:
    async def test_failing_write_leaves_no_trace(self, db: Store) -> None:
        """A write that raises after changing rows is rolled back alone, event and all."""

        def half_done(conn: sqlite3.Connection, ctx: WriteContext) -> None:
            add_model("ghost")(conn, ctx)
            raise errors.InvalidTransition("changed my mind")

        results = await asyncio.gather(
            db.write(add_model("a")),
            db.write(half_done),
            db.write(add_model("b")),
            return_exceptions=True,
        )
        assert isinstance(results[1], errors.InvalidTransition)
        assert ([1, 2], ["a", "b"]) == (sorted([results[0], results[2]]), names(db.path))
        assert 2 == db.revision

    async def test_any_exception_reaches_its_caller(self, db: Store) -> None:
        """A plain exception from a write function is raised to its caller only."""

        def buggy(conn: sqlite3.Connection, ctx: WriteContext) -> None:
            raise ValueError("bug")

        results = await asyncio.gather(
            db.write(buggy), db.write(add_model("a")), return_exceptions=True
        )
        assert (ValueError, 1) == (type(results[0]), results[1])

    async def test_one_event_per_write(self, db: Store) -> None:
        """Appending a second event raises and undoes the write."""

        def twice(conn: sqlite3.Connection, ctx: WriteContext) -> None:
            ctx.append_event(conn, "x", "a", "s", {})
            ctx.append_event(conn, "x", "b", "s", {})

        with pytest.raises(RuntimeError):
            await db.write(twice)
        assert 0 == db.revision

    async def test_aborted_transaction_acknowledges_nothing_lost(self, db: Store) -> None:
        """When the transaction dies mid-batch, the writes before it are reported lost,
        and the writes after it still commit in a transaction of their own."""

        def killer(conn: sqlite3.Connection, ctx: WriteContext) -> None:
            conn.execute("ROLLBACK")  # what SQLite does on an I/O error or a full disk
            raise sqlite3.OperationalError("disk I/O error")

        results = await asyncio.gather(
            db.write(add_model("before")),
            db.write(killer),
            db.write(add_model("after")),
            return_exceptions=True,
        )
        assert isinstance(results[0], errors.Unavailable)
        assert isinstance(results[1], errors.Unavailable)
        assert "disk I/O" not in results[1].message
        assert (1, ["after"], 1) == (results[2], names(db.path), db.revision)

    async def test_writer_survives_a_cancelled_caller(self, db: Store) -> None:
        """A caller that stops waiting does not stop the writer; its write still commits."""
        task = asyncio.ensure_future(db.write(add_model("orphan")))
        await asyncio.sleep(0)
        task.cancel()
        assert 2 == await db.write(add_model("next"))
        assert ["next", "orphan"] == names(db.path)


class TestChain:
    async def test_event_times_never_go_back(
        self, db: Store, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """If the clock steps back, events keep the previous event's time."""
        await db.write(add_model("a"))
        first = await db.read(lambda c: c.execute("SELECT at FROM events").fetchone()[0])
        monkeypatch.setattr(store, "now", lambda: "2000-01-01T00:00:00.000000Z")
        await db.write(add_model("b"))
        times = await db.read(
            lambda c: [r[0] for r in c.execute("SELECT at FROM events ORDER BY revision")]
        )
        assert [first, first] == times

    async def test_second_writer_on_the_file_cannot_fork_the_chain(self, tmp_path: Path) -> None:
        """Two stores writing one file interleave into one unbroken chain."""
        path = tmp_path / "registry.db"
        one, two = Store(path), Store(path)
        await one.open()
        await two.open()
        try:
            revisions = await asyncio.gather(
                *((one if i % 2 else two).write(add_model(f"m{i:02d}")) for i in range(40))
            )
            result = await one.read(audit.verify)
        finally:
            await one.close()
            await two.close()
        assert list(range(1, 41)) == sorted(revisions)
        assert (True, 40) == (result["ok"], result["checked"])

    async def test_write_without_event_keeps_revision(self, db: Store) -> None:
        """A write that appends no event (the heartbeat) leaves the revision alone."""
        await db.write(add_model("a"))
        await db.write(lambda conn, ctx: None)
        assert 1 == db.revision


class TestLifecycle:
    async def test_close_finishes_queued_writes(self, tmp_path: Path) -> None:
        """Writes queued before close() are committed before it returns."""
        opened = Store(tmp_path / "registry.db")
        await opened.open()
        pending = [asyncio.ensure_future(opened.write(add_model(f"m{i}"))) for i in range(50)]
        await asyncio.sleep(0)
        await opened.close()
        assert list(range(1, 51)) == sorted([await p for p in pending])
        assert 50 == len(names(tmp_path / "registry.db"))

    async def test_close_finishes_reads_in_flight(self, tmp_path: Path) -> None:
        """Reads running when close() is called complete with their answer."""
        opened = Store(tmp_path / "registry.db")
        await opened.open()
        await opened.write(add_model("a"))

        def slow_count(conn: sqlite3.Connection) -> int:
            conn.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000)"
                " SELECT count(*) FROM n"
            ).fetchone()
            return int(conn.execute("SELECT count(*) FROM models").fetchone()[0])

        reads = [asyncio.ensure_future(opened.read(slow_count)) for _ in range(4)]
        await asyncio.sleep(0)
        await opened.close()
        assert [1, 1, 1, 1] == [await r for r in reads]

    async def test_closed_store_refuses(self, tmp_path: Path) -> None:
        """write() and read() on a store that is not open raise Unavailable."""
        closed = Store(tmp_path / "registry.db")
        with pytest.raises(errors.Unavailable):
            await closed.write(add_model("a"))
        with pytest.raises(errors.Unavailable):
            await closed.read(lambda c: None)

    async def test_reads_are_read_only(self, db: Store) -> None:
        """A read function cannot write: its connection is read-only."""
        with pytest.raises(errors.Unavailable):
            await db.read(lambda c: c.execute("DELETE FROM models"))

    async def test_unopenable_file(self, tmp_path: Path) -> None:
        """A path that is not a database raises at open() and leaves nothing running."""
        (tmp_path / "registry.db").write_bytes(b"not a database at all" * 100)
        broken = Store(tmp_path / "registry.db")
        with pytest.raises(sqlite3.DatabaseError):
            await broken.open()
        with pytest.raises(errors.Unavailable):
            await broken.write(add_model("a"))
