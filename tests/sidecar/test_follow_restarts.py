"""A sidecar keeps following after its own restart, a killed litestream child and a central restart.

Issue 18, finding 1: a read-only connection left open by a load (freed only by the cyclic
garbage collector, which the follower pauses and freezes) held the followed copy and blocked
``litestream restore -f``, so after a restart writes arrived only through the stale re-restore,
or never. Here the copy is stale only after an hour, so the only way a write can reach the
sidecar is the child that follows it: each scenario checks that the next write arrives through
the same child (its pid unchanged, no further restore), and that between loads the sidecar
holds no descriptor on a followed file, nor on a deleted copy.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelreg.central.client import CentralClient
from tests.procs import CentralProc, start_central, wait_for
from tests.sidecar.helpers import SidecarProc, start_sidecar, wait_answer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REQUEST = {"op": "resolve", "model": "fraud", "ref": "staging"}
#: Long enough that no stale re-restore can deliver a write during a test.
NEVER_STALE_S = 3600.0


def version_is(number: int) -> object:
    return lambda answer: answer.get("ok") and answer["result"]["version"] == number


def held_copies(pid: int, data_dir: Path) -> list[str]:
    """The targets of ``pid``'s descriptors on copies in ``data_dir`` (deleted ones included).

    Counted from ``/proc/<pid>/fd``: a restored copy, its ``-wal``/``-shm``/``-journal``, or any
    file of the data directory the kernel marks ``(deleted)``.
    """
    held = []
    root = str(data_dir.resolve())
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if not target.startswith(root + "/"):
            continue
        name = target[len(root) + 1 :]
        if name.startswith("replica-") or target.endswith(" (deleted)"):
            held.append(name)
    return held


class Node:
    """Central (file replica, heartbeat 0.5 s) and one sidecar (by default never stale)."""

    def __init__(self, tmp_path: Path, stale_after: float = NEVER_STALE_S) -> None:
        self.tmp_path = tmp_path
        self.stale_after = stale_after
        self.central: CentralProc = start_central(tmp_path / "central")
        self.client = CentralClient(self.central.url, self.central.admin_token)
        self.sidecar: SidecarProc | None = None
        self.version = 1

    @property
    def replica(self) -> str:
        return f"file://{self.tmp_path / 'central' / 'replica'}"

    def start_sidecar(self, data_dir: Path | None = None) -> SidecarProc:
        self.sidecar = start_sidecar(self.replica, data_dir, stale_after=self.stale_after)
        return self.sidecar

    def following(self) -> int:
        """Wait until the sidecar follows with one child and no restore pending; its pid."""
        sidecar = self.sidecar
        assert sidecar is not None

        def steady() -> int | None:
            follower = sidecar.status()["follower"]
            return follower["pid"] if follower["state"] == "following" else None

        pid: int = wait_for(steady, timeout=60, what="the follower to follow one copy")
        return pid

    def next_write_arrives_through(self, pid: int) -> None:
        """Move ``staging`` to the other version; it must arrive through child ``pid``."""
        sidecar = self.sidecar
        assert sidecar is not None
        restarts = sidecar.status()["follower"]["restarts"]
        self.version = 3 - self.version
        self.client.set_alias("fraud", "staging", self.version)
        wait_answer(sidecar, version_is(self.version), REQUEST, timeout=60)
        follower = sidecar.status()["follower"]
        assert (pid, restarts) == (follower["pid"], follower["restarts"])

    def holds_no_copy(self) -> None:
        """Between loads the sidecar has no descriptor on a followed or deleted copy."""
        sidecar = self.sidecar
        assert sidecar is not None
        seen: list[list[str]] = []

        def none_held() -> bool:
            seen[:] = [held_copies(sidecar.pid, sidecar.data_dir)]
            return not seen[0]

        try:
            wait_for(none_held, timeout=20, what="no descriptor on a copy")
        except AssertionError:
            raise AssertionError(f"the sidecar still holds {seen[0]}") from None

    def stop(self) -> None:
        if self.sidecar is not None:
            self.sidecar.stop()
        self.central.stop()


def started_node(tmp_path: Path, stale_after: float = NEVER_STALE_S) -> Iterator[Node]:
    """A central with ``fraud`` v1-v2 (``staging`` -> 1) and a sidecar serving it."""
    started = Node(tmp_path, stale_after)
    try:
        started.client.create_model("fraud")
        for n in (1, 2):
            started.client.push("fraud", f"s3://models/fraud/{n}", str(n) * 64)
        started.client.set_alias("fraud", "staging", 1)
        sidecar = started.start_sidecar()
        wait_answer(sidecar, version_is(1), REQUEST)
        yield started
    finally:
        started.stop()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    """:func:`started_node` whose sidecar never goes stale."""
    yield from started_node(tmp_path)


@pytest.fixture
def quick_node(tmp_path: Path) -> Iterator[Node]:
    """:func:`started_node` whose sidecar is stale 2 s after the last heartbeat."""
    yield from started_node(tmp_path, stale_after=2.0)


class TestRestartedSidecar:
    def test_next_write_arrives_through_the_child_after_a_restart(self, node: Node) -> None:
        """After a clean restart (a cold start from the saved index) the new child delivers."""
        node.next_write_arrives_through(node.following())
        assert node.sidecar is not None
        data_dir = node.sidecar.data_dir
        for _ in range(2):
            node.sidecar.stop()
            node.start_sidecar(data_dir)
            node.next_write_arrives_through(node.following())
            node.holds_no_copy()


class TestKilledChild:
    def test_next_write_arrives_through_the_respawned_child(self, node: Node) -> None:
        """A kill -9 of the litestream child: its successor delivers the next write."""
        assert node.sidecar is not None
        for _ in range(2):
            killed = node.following()
            os.kill(killed, 9)

            def replaced(killed: int = killed) -> bool:
                return node.following() != killed

            wait_for(replaced, timeout=60, what="a new child")
            node.next_write_arrives_through(node.following())
            node.holds_no_copy()


class TestRestartedCentral:
    def test_next_write_arrives_after_central_restarts(self, quick_node: Node) -> None:
        """Central down until the copy went stale and was restored afresh, then back: the
        fresh child follows (no further re-restore is needed for the next write)."""
        node = quick_node
        sidecar = node.sidecar
        assert sidecar is not None
        for _ in range(2):
            restarts = sidecar.status()["follower"]["restarts"]
            node.central.stop()

            def restored_afresh(before: int = restarts) -> bool:
                follower = sidecar.status()["follower"]
                return bool(follower["restarts"] > before and follower["state"] == "following")

            wait_for(restored_afresh, timeout=60, what="a stale re-restore while central is down")
            node.central = start_central(node.tmp_path / "central")
            node.client = CentralClient(node.central.url, node.central.admin_token)
            wait_for(lambda: not sidecar.status()["stale"], timeout=60, what="a fresh heartbeat")
            node.next_write_arrives_through(node.following())
            node.holds_no_copy()


class TestDescriptors:
    def test_no_descriptor_on_a_copy_between_loads(self, node: Node) -> None:
        """Serving from memory: nothing of the data directory stays open."""
        node.following()
        node.holds_no_copy()
