"""A replica that loses its history under a running central — deleted, emptied, replaced by an
older copy — or holds a corrupted file: central says so (/healthz, /metrics, an ERROR line) and
repairs it, and no second central can take the writer lock meanwhile. Real central, litestream
and (for S3) moto_server."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import pytest

from modelreg.central.client import CentralClient
from tests.procs import CentralProc, start_central, wait_for
from tests.replication import replica_store
from tests.replication.helpers import burst, replica_revision

pytestmark = pytest.mark.integration

#: Check the replica often, so that each test waits a second or two, not ten.
FAST = {"REG_REPLICA_CHECK_INTERVAL_S": "0.3"}


def _metric(central: CentralProc, name: str, **labels: str) -> float:
    """The value of one series of central's /metrics (0 when absent)."""
    import urllib.request

    with urllib.request.urlopen(central.url + "/metrics", timeout=5) as answer:
        text = answer.read().decode()
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.compile(rf"^modelreg_central_{name}(?:{{{re.escape(wanted)}}})? (\S+)$", re.M)
    match = pattern.search(text)
    return float(match.group(1)) if match else 0.0


def _problems(central: CentralProc, kind: str) -> float:
    """How often central found a problem of ``kind`` in either database's replica (one
    re-seed repairs both: whichever check comes first reports it)."""
    return sum(
        _metric(central, "replica_problems_total", database=db, kind=kind)
        for db in ("registry", "secrets")
    )


def _replica(central: CentralProc, database: str = "registry") -> dict[str, Any]:
    state: dict[str, Any] = central.healthz()["replication"]["replica"]["databases"][database]
    return state


def _healed(central: CentralProc, base_url: str, probe: Path) -> bool:
    """The replica restores to central's revision again, and central says it is ok."""
    revision = central.healthz()["revision"]
    return replica_revision(base_url, probe) == revision and _replica(central)["state"] == "ok"


@pytest.fixture
def running(replica_kind: str, tmp_path: Path) -> Any:
    central = start_central(tmp_path / "a", replica_kind, env=FAST)
    try:
        client = CentralClient(central.url, central.admin_token)
        burst(client, "fraud", 3)
        wait_for(lambda: _replica(central)["state"] == "ok", what="a first good replica check")
        yield central, client, replica_kind
    finally:
        assert 0 == central.stop()


class TestLostHistory:
    def test_detected_said_and_reseeded(self, running: Any, tmp_path: Path) -> None:
        """The replica is deleted (rm -rf; every object of the prefix on S3): central reports
        the loss in /metrics and its log, re-seeds it with a full snapshot, and a fresh node
        restores every write, the ones after the loss too."""
        central, client, base = running
        replica_store.delete(base)
        self._heals(central, client, base, tmp_path)

    @pytest.mark.parametrize("replica_kind", ["file"], indirect=True)
    def test_emptied_directory(self, running: Any, tmp_path: Path) -> None:
        """The replica directory stays but its contents go (on S3 that is a deletion)."""
        central, client, base = running
        replica_store.wipe(base)
        self._heals(central, client, base, tmp_path)

    def _heals(
        self, central: CentralProc, client: CentralClient, base: str, tmp_path: Path
    ) -> None:
        burst(client, "after", 2)
        wait_for(
            lambda: _problems(central, "lost"),
            what="central to report the loss",
        )
        wait_for(
            lambda: _healed(central, base, tmp_path / "probe"),
            timeout=30,
            interval=0.3,
            what="the re-seeded replica to restore to central's revision",
        )
        expected = (True, True, 1.0)
        assert expected == (
            "lost its history" in central.log(),
            _metric(central, "replica_reseeds_total", database="registry")
            + _metric(central, "replica_reseeds_total", database="secrets")
            >= 1,
            _metric(central, "replica_ok", database="registry"),
        )

    @pytest.mark.parametrize("replica_kind", ["file"], indirect=True)  # same code path on S3
    def test_older_copy_put_back(self, running: Any, tmp_path: Path) -> None:
        """A replica replaced by an older copy of itself (a restored bucket backup) is a loss
        too: reported and re-seeded up to central's revision."""
        central, client, base = running
        old = replica_store.snapshot(base)
        burst(client, "newer", 3)
        wait_for(
            lambda: replica_revision(base, tmp_path / "p1") == central.healthz()["revision"],
            what="the newer writes in the replica",
        )
        replica_store.replace(base, old)
        wait_for(
            lambda: _problems(central, "lost"),
            what="central to report the loss",
        )
        wait_for(
            lambda: _healed(central, base, tmp_path / "p2"),
            timeout=30,
            interval=0.3,
            what="the re-seeded replica",
        )

    @pytest.mark.parametrize("replica_kind", ["file"], indirect=True)  # same code path on S3
    def test_health_says_degraded_while_lost(self, running: Any, tmp_path: Path) -> None:
        """While the replica keeps losing its files (wiped again and again), /healthz says
        degraded with the replica lost, and replica_ok is 0; once it stops, ok again."""
        central, _, base = running
        stop = threading.Event()

        def keep_wiping() -> None:
            while not stop.is_set():
                replica_store.wipe(base)
                stop.wait(0.05)

        wiper = threading.Thread(target=keep_wiping, daemon=True)
        wiper.start()
        try:
            health = wait_for(
                lambda: (h := central.healthz())["status"] == "degraded" and h,
                what="/healthz to say degraded",
            )
            seen = (
                health["replication"]["replica"]["state"],
                _metric(central, "replica_ok", database="registry")
                + _metric(central, "replica_ok", database="secrets"),
            )
        finally:
            stop.set()
            wiper.join()
        wait_for(
            lambda: _healed(central, base, tmp_path / "probe"),
            timeout=30,
            interval=0.3,
            what="the replica to heal once the wiping stopped",
        )
        expected_state = "lost"
        assert expected_state == seen[0]
        assert seen[1] < 2


class TestWriterLock:
    def test_no_second_central_after_the_replica_is_deleted(
        self, running: Any, tmp_path: Path
    ) -> None:
        """The lock does not go with the replica: with the first central alive, a second one
        on an empty data directory is refused instead of starting at revision 1."""
        _, client, base = running
        replica_store.delete(base)
        with pytest.raises(RuntimeError, match="another central") as info:
            second = start_central(tmp_path / "b", base)
            second.stop()
        expected = (True, 4)
        assert expected == (
            "revision 1" not in str(info.value),
            client.get_model("fraud")["latest"]["version"] + 1,
        )


class TestCorruption:
    def test_corrupt_level0_file_is_reported_and_put_back(
        self, running: Any, tmp_path: Path
    ) -> None:
        """A damaged level-0 file is reported as corrupt and replaced by central's own copy."""
        central, client, base = running
        burst(client, "more", 1)
        wait_for(
            lambda: replica_revision(base, tmp_path / "p1") == central.healthz()["revision"],
            what="the replica to be current",
        )
        local = replica_store.local_level0(central.data_dir)
        candidates = [
            f for f in replica_store.files(base) if f.level == 0 and (local / f.name).exists()
        ]
        target = candidates[-1]
        replica_store.damage(base, target.key)
        wait_for(
            lambda: _problems(central, "corrupt"),
            what="central to report the corrupt file",
        )
        wait_for(
            lambda: replica_store.read(base, target.key) == (local / target.name).read_bytes(),
            what="the file to be put back",
        )
        expected = (True, True)
        assert expected == (
            "differ from what central uploaded" in central.log(),
            _metric(central, "replica_repairs_total", database="registry") >= 1,
        )

    @pytest.mark.parametrize("replica_kind", ["file"], indirect=True)  # same code path on S3
    def test_corrupt_snapshot_is_reported_and_reseeded(self, running: Any, tmp_path: Path) -> None:
        """A damaged snapshot makes a fresh restore fail: central reports it as corrupt and
        writes a new snapshot, after which a fresh node restores again."""
        central, _, base = running
        snapshots = wait_for(
            lambda: [f for f in replica_store.files(base) if f.level == 9],
            what="litestream's first snapshot",
        )
        replica_store.damage(base, snapshots[-1].key)
        wait_for(
            lambda: _problems(central, "corrupt"),
            what="central to report the corrupt snapshot",
        )
        wait_for(
            lambda: _healed(central, base, tmp_path / "probe"),
            timeout=30,
            interval=0.3,
            what="a restorable replica again",
        )
