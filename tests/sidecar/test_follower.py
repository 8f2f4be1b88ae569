"""The follower heals: a stalled or dead litestream child is replaced without a gap in serving."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelreg.central.client import CentralClient
from tests.procs import CentralProc, start_central, wait_for
from tests.sidecar.helpers import SidecarProc, start_sidecar, wait_answer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REQUEST = {"op": "resolve", "model": "fraud", "ref": "staging"}


def version_is(number: int) -> object:
    return lambda answer: answer.get("ok") and answer["result"]["version"] == number


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[CentralClient, SidecarProc]]:
    """Central (file replica, heartbeat 0.5 s) and a sidecar that is stale after 1.5 s."""
    central: CentralProc = start_central(tmp_path / "central")
    sidecar: SidecarProc | None = None
    try:
        client = CentralClient(central.url, central.admin_token)
        client.create_model("fraud")
        for n in (1, 2, 3):
            client.push("fraud", f"s3://models/fraud/{n}", str(n) * 64)
        client.set_alias("fraud", "staging", 1)
        sidecar = start_sidecar(f"file://{tmp_path / 'central' / 'replica'}", stale_after=1.5)
        wait_answer(sidecar, version_is(1), REQUEST)
        wait_for(lambda: not sidecar.status()["stale"], what="a fresh heartbeat")
        yield client, sidecar
    finally:
        if sidecar is not None:
            sidecar.stop()
        central.stop()


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie not yet reaped by init counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


class TestHealing:
    def test_stalled_child_is_replaced_by_a_fresh_restore(
        self, node: tuple[CentralClient, SidecarProc]
    ) -> None:
        """A frozen restore (SIGSTOP) goes stale; a fresh restore takes over and sees new writes."""
        client, sidecar = node
        stalled = sidecar.status()["follower"]["pid"]
        os.kill(stalled, signal.SIGSTOP)
        try:
            wait_for(lambda: sidecar.status()["stale"], timeout=30, what="stale")
            assert sidecar.resolve("fraud", "staging")["ok"] is True  # still serving
            client.set_alias("fraud", "staging", 2)
            wait_answer(sidecar, version_is(2), REQUEST, timeout=60)
            wait_for(lambda: not sidecar.status()["stale"], timeout=30, what="fresh again")
            assert stalled != sidecar.status()["follower"]["pid"]
            wait_for(lambda: _gone(stalled), timeout=30, what="the stalled child stopped")
        finally:
            if not _gone(stalled):
                os.kill(stalled, signal.SIGCONT)

    def test_dead_child_is_replaced(self, node: tuple[CentralClient, SidecarProc]) -> None:
        """A killed restore is replaced by a fresh one; serving never stops meanwhile."""
        client, sidecar = node
        dead = sidecar.status()["follower"]["pid"]
        os.kill(dead, signal.SIGKILL)
        assert sidecar.resolve("fraud", "staging")["ok"] is True
        wait_for(
            lambda: sidecar.status()["follower"]["pid"] not in (None, dead),
            timeout=30,
            what="a new child",
        )
        client.set_alias("fraud", "staging", 3)
        wait_answer(sidecar, version_is(3), REQUEST, timeout=60)
        assert sidecar.status()["follower"]["restarts"] >= 1

        def copies() -> list[str]:
            return sorted(p.name for p in sidecar.data_dir.iterdir() if p.suffix == ".db")

        # the replaced copy is deleted once its successor serves
        wait_for(lambda: len(copies()) == 1, timeout=30, what=f"one copy left, not {copies()}")


class TestCrashedSidecar:
    def test_restart_stops_the_restore_a_killed_sidecar_left(
        self, node: tuple[CentralClient, SidecarProc], tmp_path: Path
    ) -> None:
        """A SIGKILLed sidecar's litestream child is stopped by the next sidecar on its data."""
        client, sidecar = node
        orphan = sidecar.status()["follower"]["pid"]
        sidecar.proc.kill()
        sidecar.proc.wait(10)
        assert not _gone(orphan)  # its own session: nothing else stops it
        replica = f"file://{tmp_path / 'central' / 'replica'}"
        again = start_sidecar(replica, sidecar.data_dir, stale_after=1.5)
        try:
            wait_for(lambda: _gone(orphan), timeout=30, what="the orphaned restore to stop")
            client.set_alias("fraud", "staging", 2)
            wait_answer(again, version_is(2), REQUEST, timeout=60)
        finally:
            again.stop()
            if not _gone(orphan):  # the check above failed: do not leave it running
                os.kill(orphan, signal.SIGKILL)
