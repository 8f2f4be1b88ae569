"""watch and min_revision through the client library: across promotions and sidecar restarts.

Two set-ups: a sidecar whose local copy the test changes the way ``litestream restore -f``
does (rows applied, then ``-txid`` rewritten), and the real chain, central → litestream →
sidecar, where a promotion at central reaches a watcher.
"""

from __future__ import annotations

import asyncio
import queue
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelreg.central.client import CentralClient
from modelreg.central.records import now
from modelreg.errors import AliasNotFound, Timeout, Unavailable
from modelreg.sidecar.client import AsyncClient, Client, ResolvedModel
from tests.procs import CentralProc
from tests.sidecar.conftest import sample_registry, seed_copy
from tests.sidecar.helpers import SidecarProc, short_dir, start_sidecar

pytestmark = pytest.mark.integration

#: Seconds to wait for a watcher to see a change (a deadline, not a measurement).
CHANGE_DEADLINE_S = 60.0


def promote_in_copy(copy: Path, model: str, alias: str, version: int) -> int:
    """Move ``alias`` in a local copy as an applied replica change would; return the revision."""
    conn = sqlite3.connect(copy, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        revision = int(conn.execute("SELECT MAX(revision) FROM events").fetchone()[0]) + 1
        conn.execute(
            "INSERT INTO events (revision, at, actor, action, subject, details, prev_hash, hash)"
            " VALUES (?, ?, 'test', 'alias.set', ?, '{}', '', '')",
            (revision, now(), f"{model}@{alias}"),
        )
        conn.execute(
            "UPDATE aliases SET version = ?, revision = ? WHERE name = ?"
            " AND model_id = (SELECT id FROM models WHERE name = ?)",
            (version, revision, alias, model),
        )
        conn.execute("UPDATE heartbeat SET at = ?, revision = ?", (now(), revision))
        conn.execute("COMMIT")
    finally:
        conn.close()
    copy.with_name(copy.name + "-txid").write_text(f"{revision:016x}\n")
    return revision


class Watcher:
    """Iterates ``Client.watch`` in a thread; records arrive on ``.records``."""

    def __init__(self, socket_path: Path, model: str, ref: str) -> None:
        self.records: queue.Queue[ResolvedModel | BaseException] = queue.Queue()
        self.client = Client(socket_path)
        self.stream = self.client.watch(model, ref)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for record in self.stream:
                self.records.put(record)
        except BaseException as exc:  # handed to the test through the queue
            self.records.put(exc)

    def stop(self) -> None:
        """End the watch from this thread (Client.close) and wait for the thread."""
        self.client.close()
        self.thread.join(CHANGE_DEADLINE_S)
        assert not self.thread.is_alive()

    def next(self) -> ResolvedModel:
        item = self.records.get(timeout=CHANGE_DEADLINE_S)
        if isinstance(item, BaseException):
            raise item
        return item


@pytest.fixture
def seeded() -> Iterator[tuple[Path, Path]]:
    """A short directory and the local copy seeded in its ``data`` subdirectory."""
    sock_dir = short_dir()
    db = sample_registry(sock_dir / "registry.db")
    copy = seed_copy(db, sock_dir / "data")
    db.close()
    try:
        yield sock_dir, copy
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


@pytest.fixture
def copy_sidecar(seeded: tuple[Path, Path]) -> Iterator[tuple[SidecarProc, Path]]:
    """A sidecar serving the seeded copy (its replica does not exist) and that copy's path."""
    sock_dir, copy = seeded
    sidecar = start_sidecar((sock_dir / "no-replica").as_uri(), sock_dir=sock_dir)
    try:
        yield sidecar, copy
    finally:
        sidecar.stop()


class TestWatchLocalCopy:
    def test_current_answer_then_each_change(self, copy_sidecar: tuple[SidecarProc, Path]) -> None:
        """watch yields the current record, then one per promotion, in order."""
        sidecar, copy = copy_sidecar
        watcher = Watcher(sidecar.socket, "fraud", "production")
        assert 1 == watcher.next().version
        revision = promote_in_copy(copy, "fraud", "production", 2)
        changed = watcher.next()
        assert (2, revision) == (changed.version, changed.revision)
        promote_in_copy(copy, "fraud", "production", 1)
        assert 1 == watcher.next().version
        watcher.stop()

    def test_repeated_resolve_sees_the_promotion(
        self, copy_sidecar: tuple[SidecarProc, Path]
    ) -> None:
        """A resolve asked again and again answers the new version once it is promoted."""
        sidecar, copy = copy_sidecar
        with Client(sidecar.socket) as reg:
            before = reg.resolve("fraud", "production")
            revision = promote_in_copy(copy, "fraud", "production", 2)
            deadline = time.monotonic() + CHANGE_DEADLINE_S
            after = reg.resolve("fraud", "production")
            while after.revision < revision and time.monotonic() < deadline:
                time.sleep(0.01)
                after = reg.resolve("fraud", "production")
        assert (1, 2, revision) == (before.version, after.version, after.revision)

    def test_min_revision_waits_for_the_change(
        self, copy_sidecar: tuple[SidecarProc, Path]
    ) -> None:
        """resolve(min_revision=) waits until the copy reaches it, else raises Timeout."""
        sidecar, copy = copy_sidecar
        with Client(sidecar.socket) as reg:
            current = reg.resolve("fraud", "production")
            with pytest.raises(Timeout):
                reg.resolve("fraud", "production", min_revision=current.revision + 1, wait_ms=50)
            waiting: list[Any] = []

            def ask() -> None:
                with Client(sidecar.socket) as other:
                    waiting.append(
                        other.resolve(
                            "fraud", "production", min_revision=current.revision + 1, wait_ms=60_000
                        )
                    )

            thread = threading.Thread(target=ask)
            thread.start()
            revision = promote_in_copy(copy, "fraud", "production", 2)
            thread.join(CHANGE_DEADLINE_S)
        assert [(2, revision)] == [(r.version, r.revision) for r in waiting]

    @pytest.mark.slow
    def test_watch_survives_a_sidecar_restart(self, seeded: tuple[Path, Path]) -> None:
        """The watcher reconnects by itself and reports the change made while it was down."""
        sock_dir, copy = seeded
        replica = (sock_dir / "no-replica").as_uri()
        sidecar = start_sidecar(replica, sock_dir=sock_dir)
        watcher = Watcher(sidecar.socket, "fraud", "canary")
        try:
            assert 2 == watcher.next().version
        finally:
            sidecar.stop()
        promote_in_copy(copy, "fraud", "canary", 1)
        sidecar = start_sidecar(replica, sock_dir=sock_dir)
        try:
            assert 1 == watcher.next().version
        finally:
            watcher.stop()
            sidecar.stop()

    @pytest.mark.slow
    def test_reconnect_deadline_ends_the_watch(self, seeded: tuple[Path, Path]) -> None:
        """With reconnect_deadline_s, a sidecar that stays away ends the watch: Unavailable."""
        sock_dir, _ = seeded
        sidecar = start_sidecar((sock_dir / "no-replica").as_uri(), sock_dir=sock_dir)
        with Client(sidecar.socket, connect_deadline_s=0.1) as reg:
            stream = reg.watch("fraud", "production", reconnect_deadline_s=0.5)
            try:
                assert 1 == next(stream).version
            finally:
                sidecar.stop()
            with pytest.raises(Unavailable):
                next(stream)

    def test_watch_of_a_missing_alias_raises(self, copy_sidecar: tuple[SidecarProc, Path]) -> None:
        """Watching an alias that does not exist raises AliasNotFound."""
        sidecar, _ = copy_sidecar
        with Client(sidecar.socket) as reg, pytest.raises(AliasNotFound):
            next(reg.watch("fraud", "staging"))

    async def test_async_watch_sees_a_promotion(
        self, copy_sidecar: tuple[SidecarProc, Path]
    ) -> None:
        """AsyncClient.watch yields the current record, then the promoted one."""
        sidecar, copy = copy_sidecar
        async with AsyncClient(sidecar.socket) as reg:
            stream = reg.watch("fraud", "production")
            first = await asyncio.wait_for(anext(stream), CHANGE_DEADLINE_S)
            await asyncio.to_thread(promote_in_copy, copy, "fraud", "production", 2)
            second = await asyncio.wait_for(anext(stream), CHANGE_DEADLINE_S)
            await stream.aclose()
        assert (1, 2) == (first.version, second.version)

    async def test_aclose_ends_an_async_watch(self, copy_sidecar: tuple[SidecarProc, Path]) -> None:
        """AsyncClient.aclose() ends a watch that is waiting for a change."""
        sidecar, _ = copy_sidecar
        reg = AsyncClient(sidecar.socket)
        stream = reg.watch("fraud", "production")
        assert 1 == (await asyncio.wait_for(anext(stream), CHANGE_DEADLINE_S)).version
        waiting = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)  # let it reach the read
        await reg.aclose()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiting, CHANGE_DEADLINE_S)


@pytest.mark.slow
class TestWatchThroughCentral:
    def test_promotion_at_central_reaches_a_watcher(self, central: CentralProc) -> None:
        """central → litestream → sidecar: a watcher sees the promotion, min_revision waits."""
        admin = CentralClient(central.url, central.admin_token)
        admin.create_model("fraud")
        for n in (1, 2):
            admin.register_version("fraud", f"s3://models/fraud/{n}", f"{n}" * 64)
        admin.set_alias("fraud", "canary", 1)
        replica = (central.data_dir / "replica").as_uri()
        sidecar = start_sidecar(replica, follow_interval=0.1)
        try:
            with Client(sidecar.socket, connect_deadline_s=30) as reg:
                watcher = Watcher(sidecar.socket, "fraud", "canary")
                first = watcher.next()
                assert 1 == first.version
                move = admin.set_alias("fraud", "canary", 2, expected=1)
                changed = watcher.next()
                assert 2 == changed.version
                assert changed.revision >= move["revision"]
                move = admin.set_alias("fraud", "canary", 1, expected=2)
                resolved = reg.resolve(
                    "fraud", "canary", min_revision=move["revision"], wait_ms=30_000
                )
                assert 1 == resolved.version
                watcher.stop()
        finally:
            sidecar.stop()
            shutil.rmtree(sidecar.socket.parent, ignore_errors=True)
