"""A corrupted replica file is reported in the sidecar's status, not retried silently.

Issue 18, finding 11: with a level-0 file or the snapshot of the replica corrupted, litestream's
follower retries every tick and logs an error that nobody read; the sidecar's status said all
was well until (with the default settings) the stale re-restore, 30 s later. The sidecar reads
its litestream child's log as it goes, so the error is in ``status`` by the child's next tick:
these tests use a 3 s follow interval and find the error reported while the child's log holds at
most two failed attempts (counted, not timed).
"""

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

FOLLOW_INTERVAL_S = 3.0


def level_files(replica: Path, level: int) -> dict[str, int]:
    """The LTX files of one level of a file replica, by name, with their sizes."""
    folder = replica / "registry" / "ltx" / str(level)
    try:
        return {entry.name: entry.stat().st_size for entry in os.scandir(folder)}
    except FileNotFoundError:
        return {}


def corrupt(path: Path) -> None:
    """Overwrite everything after the 100-byte LTX header (pages, index, trailer) with junk."""
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.seek(100)
        fh.write(b"\xa5" * (size - 100))


@pytest.fixture
def central(tmp_path: Path) -> Iterator[CentralProc]:
    """Central without a heartbeat (only the test's writes make level-0 files)."""
    proc = start_central(tmp_path / "central", heartbeat_interval=0)
    try:
        yield proc
    finally:
        proc.stop()


class TestCorruptLevelZero:
    def test_error_is_in_status_by_the_next_tick(
        self, central: CentralProc, tmp_path: Path
    ) -> None:
        """The follower cannot apply a corrupted level-0 file: status says so, and why."""
        replica = tmp_path / "central" / "replica"
        client = CentralClient(central.url, central.admin_token)
        client.create_model("fraud")
        sidecar: SidecarProc = start_sidecar(
            f"file://{replica}", follow_interval=FOLLOW_INTERVAL_S, stale_after=3600
        )
        try:
            wait_answer(sidecar, lambda a: a.get("ok"), {"op": "get", "model": "fraud"})
            wait_for(lambda: sidecar.status()["follower"]["state"] == "following", timeout=60)
            child = sidecar.status()["follower"]["pid"]
            before = level_files(replica, 0)
            os.kill(child, signal.SIGSTOP)  # so that it cannot apply the file before we break it
            try:
                client.create_model("churn")
                new = wait_for(
                    lambda: sorted(set(level_files(replica, 0)) - set(before)),
                    timeout=30,
                    what="a new level-0 file",
                )
                for name in new:
                    corrupt(replica / "registry" / "ltx" / "0" / name)
            finally:
                os.kill(child, signal.SIGCONT)
            error = wait_for(
                lambda: sidecar.status()["follower"]["error"],
                timeout=60,
                what="the follower's error in status",
            )
            attempts = _failed_attempts(sidecar)
            assert 1 <= attempts <= 2, (attempts, error)
            assert "ltx" in error.lower() or "decode" in error.lower(), error
            assert (
                "model_not_found" == sidecar.ask({"op": "get", "model": "churn"})["error"]["code"]
            )
            assert True is sidecar.ask({"op": "get", "model": "fraud"})["ok"]  # still serving
        finally:
            sidecar.stop()


class TestCorruptSnapshot:
    def test_error_is_in_status(self, central: CentralProc, tmp_path: Path) -> None:
        """A fresh sidecar cannot restore a corrupted snapshot: status and the not-ready reason
        say so (and it keeps trying)."""
        replica = tmp_path / "central" / "replica"
        client = CentralClient(central.url, central.admin_token)
        client.create_model("fraud")
        snapshots = wait_for(lambda: level_files(replica, 9), timeout=30, what="a snapshot")
        for name in snapshots:
            corrupt(replica / "registry" / "ltx" / "9" / name)
        sidecar = start_sidecar(
            f"file://{replica}", follow_interval=FOLLOW_INTERVAL_S, stale_after=3600
        )
        try:
            status = wait_for(
                lambda: (s := sidecar.status())["follower"]["error"] and s,
                timeout=60,
                what="the restore error in status",
            )
            assert (False, True) == (status["ready"], bool(status["reason"]))
        finally:
            sidecar.stop()


def _failed_attempts(sidecar: SidecarProc) -> int:
    """Failed apply attempts in the log of every litestream child of ``sidecar``."""
    return sum(
        log.read_text(errors="replace").count("error applying updates")
        for log in sidecar.data_dir.glob("replica-*.log")
    )
