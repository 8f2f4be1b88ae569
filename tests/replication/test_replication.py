"""Replication with real processes: central, litestream and (for S3) moto_server.

One body per behaviour, run against both replica kinds (``replica_kind``: file and S3).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from modelreg.central.client import CentralClient
from tests.conftest import s3_replica_url
from tests.procs import MotoProc, start_central, wait_for
from tests.replication.helpers import burst, replica_revision, restore, revision, rows

pytestmark = pytest.mark.integration


#: The event a central records when it issues a new admin secret at start.
_REISSUE = ("token.create", "admin", "central", {"role": "admin", "models": []})


def _changes(client: CentralClient, after: int) -> list[tuple[Any, ...]]:
    """(action, subject, actor, details) of every event after revision ``after``."""
    items = client.events(after=after)["items"]
    return [(e["action"], e["subject"], e["actor"], e["details"]) for e in items]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


class TestRestore:
    def test_restored_databases_hold_the_same_rows(self, replica_kind: str, tmp_path: Path) -> None:
        """A replica restored into a fresh directory has every row central wrote."""
        data = tmp_path / "central"
        central = start_central(data, replica_kind)
        try:
            client = CentralClient(central.url, central.admin_token)
            burst(client, "fraud", 5)
            client.set_alias("fraud", "staging", 3, reason="smoke")
            client.create_token("ci", "publisher")
        finally:
            assert 0 == central.stop()
        fresh = tmp_path / "fresh"
        for name in ("registry", "secrets"):
            restored = restore(replica_kind, name, fresh / f"{name}.db")
            assert restored is not None
            assert rows(data / f"{name}.db") == rows(restored)

    def test_empty_data_dir_starts_from_the_replica(
        self, replica_kind: str, tmp_path: Path
    ) -> None:
        """A central on an empty data directory restores both databases before serving."""
        first = start_central(tmp_path / "a", replica_kind)
        try:
            client = CentralClient(first.url, first.admin_token)
            burst(client, "fraud", 3)
            ci = client.create_token("ci", "reader")
            last = ci["revision"]
        finally:
            assert 0 == first.stop()
        second = start_central(tmp_path / "b", replica_kind)
        try:
            # the new host has no admin token file: it issues (and records) a new admin secret
            assert [_REISSUE] == _changes(CentralClient(second.url, second.admin_token), last)
            reader = CentralClient(second.url, ci["secret"])
            assert 3 == reader.get_model("fraud")["latest"]["version"]
        finally:
            assert 0 == second.stop()


class TestCrash:
    @pytest.mark.slow
    def test_kill9_then_disk_loss_loses_no_acknowledged_write(
        self, replica_kind: str, tmp_path: Path
    ) -> None:
        """After kill -9 and the loss of the data directory, every acknowledged write is back."""
        data = tmp_path / "central"
        central = start_central(data, replica_kind)
        client = CentralClient(central.url, central.admin_token)
        last = burst(client, "fraud", 25)
        litestream_pid = wait_for(
            lambda: central.healthz()["replication"]["pid"], what="litestream's pid"
        )
        central.kill()
        # the guard stops the orphaned litestream, which syncs what it had not yet shipped
        wait_for(lambda: _gone(litestream_pid), what="litestream to exit after central died")
        wait_for(
            lambda: replica_revision(replica_kind, tmp_path / "probe") == last,
            timeout=30,
            interval=0.3,
            what=f"the replica to reach revision {last}",
        )
        shutil.rmtree(data)
        again = start_central(data, replica_kind)
        try:
            client = CentralClient(again.url, again.admin_token)
            # the admin token file went with the disk: the new admin secret is recorded
            assert [_REISSUE] == _changes(client, last)
            assert 25 == client.get_model("fraud")["latest"]["version"]
            assert True is client.verify_audit()["ok"]
            assert last + 2 == client.create_model("after-crash")["revision"]
        finally:
            assert 0 == again.stop()


class TestObjectStoreOutage:
    @pytest.mark.slow
    def test_writes_continue_and_the_replica_catches_up(
        self, moto: MotoProc, tmp_path: Path
    ) -> None:
        """With S3 down central keeps acknowledging writes; back up, the replica catches up."""
        url = s3_replica_url(moto)
        central = start_central(tmp_path / "central", url)
        try:
            client = CentralClient(central.url, central.admin_token)
            burst(client, "before", 2)
            moto.stop()
            last = burst(client, "during", 5)
            assert last == central.healthz()["revision"]
            moto.start_again()
            wait_for(
                lambda: replica_revision(url, tmp_path / "probe") == last,
                timeout=30,
                interval=0.3,
                what=f"the replica to reach revision {last}",
            )
            assert central.proc.poll() is None
        finally:
            assert 0 == central.stop()

    @pytest.mark.slow
    def test_restart_while_store_is_down_needs_force(self, moto: MotoProc, tmp_path: Path) -> None:
        """With S3 unreachable a restart is refused (no lease, no stale check) unless forced."""
        url = s3_replica_url(moto)
        data = tmp_path / "central"
        central = start_central(data, url)
        burst(CentralClient(central.url, central.admin_token), "before", 1)
        assert 0 == central.stop()
        moto.stop()
        with pytest.raises(RuntimeError, match="writer lease"):
            start_central(data, url)
        forced = start_central(data, url, extra_args=["--force"])
        try:
            last = burst(CentralClient(forced.url, forced.admin_token), "during", 2)
            moto.start_again()
            wait_for(
                lambda: replica_revision(url, tmp_path / "probe") == last,
                timeout=30,
                interval=0.3,
                what=f"the replica to reach revision {last}",
            )
        finally:
            assert 0 == forced.stop()


class TestNothingSecretReplicated:
    def test_registry_replica_holds_no_token_or_hash(
        self, replica_kind: str, tmp_path: Path
    ) -> None:
        """No token secret and no token hash appears in any column of the replicated registry."""
        data = tmp_path / "central"
        central = start_central(data, replica_kind)
        try:
            client = CentralClient(central.url, central.admin_token)
            secrets = [central.admin_token]
            for name, role in (("ci", "publisher"), ("ops", "deployer")):
                secrets.append(client.create_token(name, role)["secret"])
            burst(CentralClient(central.url, secrets[1]), "fraud", 2)
        finally:
            assert 0 == central.stop()
        conn = sqlite3.connect(data / "secrets.db")
        stored = [row[0] for row in conn.execute("SELECT hash FROM tokens")]
        conn.close()
        needles = {s for s in secrets} | {hashlib.sha256(s.encode()).hexdigest() for s in secrets}
        needles |= set(stored)
        restored = restore(replica_kind, "registry", tmp_path / "restored" / "registry.db")
        assert restored is not None
        found = [
            (table, value)
            for table, table_rows in rows(restored).items()
            for row in table_rows
            for value in row
            if any(needle in str(value) for needle in needles)
        ]
        assert [] == found
        assert "tokens" not in rows(restored)


class TestStaleVolume:
    @pytest.mark.slow
    def test_older_data_dir_is_refused_unless_forced(self, tmp_path: Path) -> None:
        """A data directory older than its replica is refused; --force starts it anyway."""
        replica = f"file://{tmp_path / 'replica'}"
        data, old = tmp_path / "central", tmp_path / "old"
        central = start_central(data, replica)
        last_old = burst(CentralClient(central.url, central.admin_token), "fraud", 2)
        assert 0 == central.stop()
        shutil.copytree(data, old)
        central = start_central(data, replica)
        burst(CentralClient(central.url, central.admin_token), "more", 2)
        assert 0 == central.stop()
        shutil.rmtree(data)
        old.rename(data)
        with pytest.raises(RuntimeError, match="stale"):
            start_central(data, replica)
        forced = start_central(data, replica, extra_args=["--force"])
        try:
            assert last_old == forced.healthz()["revision"]
            last = CentralClient(forced.url, forced.admin_token).create_model("kept")["revision"]
        finally:
            assert 0 == forced.stop()
        assert last_old + 1 == last == revision(data / "registry.db")
        # the replica now continues from the kept local file
        assert last == replica_revision(replica, tmp_path / "probe")


class TestOneWriter:
    def test_second_central_on_the_same_replica_is_refused(
        self, replica_kind: str, tmp_path: Path
    ) -> None:
        """A second central pointed at a replica path another central holds does not start."""
        first = start_central(tmp_path / "a", replica_kind)
        try:
            with pytest.raises(RuntimeError, match="another central holds the replica"):
                start_central(tmp_path / "b", replica_kind)
            assert "ok" == first.healthz()["status"]
        finally:
            assert 0 == first.stop()


class TestSupervisor:
    @pytest.mark.slow
    def test_crashed_litestream_is_restarted(self, tmp_path: Path) -> None:
        """When litestream dies central restarts it, and replication goes on."""
        replica = f"file://{tmp_path / 'replica'}"
        central = start_central(tmp_path / "central", replica)
        try:
            pid = wait_for(lambda: central.healthz()["replication"]["pid"], what="litestream pid")
            os.kill(pid, 9)
            status = wait_for(
                lambda: (
                    (s := central.healthz()["replication"])["restarts"] == 1
                    and s["pid"] not in (None, pid)
                    and s
                ),
                what="litestream to be restarted",
            )
            assert True is status["running"]
            last = burst(CentralClient(central.url, central.admin_token), "fraud", 2)
            wait_for(
                lambda: replica_revision(replica, tmp_path / "probe") == last,
                what=f"the replica to reach revision {last}",
            )
            assert "litestream: " in central.log()
        finally:
            assert 0 == central.stop()
