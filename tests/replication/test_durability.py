"""Replicated acknowledgements with real processes: a ``wait=replicated`` write survives the loss
of central's whole host (central, its guard and litestream killed at once, the data directory
deleted), and a write the replica cannot confirm is answered ``not_replicated``, never lost."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from modelreg.central.client import CentralClient
from modelreg.errors import InvalidField, NotReplicated
from tests.conftest import s3_replica_url
from tests.procs import CentralProc, MotoProc, start_central, stop_process, wait_for
from tests.replication.helpers import DIGEST

pytestmark = pytest.mark.integration

#: A sync interval long enough that nothing ships by itself while a test runs.
SLOW_SYNC_S = 30.0


def _parent(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1])


def lose_host(central: CentralProc) -> None:
    """What losing central's host does: litestream, its guard and central die at the same
    instant (no final sync by anyone), and the data directory is gone."""
    litestream = wait_for(lambda: central.healthz()["replication"]["pid"], what="litestream's pid")
    guard = _parent(litestream)
    for pid in (litestream, guard):
        os.kill(pid, signal.SIGKILL)
    central.kill()
    shutil.rmtree(central.data_dir)


def _writes(client: CentralClient, count: int) -> list[tuple[int, str]]:
    """Register ``count`` versions of ``fraud``; the (revision, revision_hash) of each."""
    acked = [(lambda r: (r["revision"], r["revision_hash"]))(client.create_model("fraud"))]
    for n in range(count):
        record, _ = client.push("fraud", artifact_uri=f"s3://m/fraud/{n}", sha256=DIGEST)
        acked.append((record["revision"], record["revision_hash"]))
    return acked


def _history(client: CentralClient) -> dict[int, str]:
    """revision -> hash of every event central holds."""
    out: dict[int, str] = {}
    after = 0
    while True:
        page = client.events(after=after, limit=1000)["items"]
        if not page:
            return out
        out.update({e["revision"]: e["hash"] for e in page})
        after = page[-1]["revision"]


class TestReplicatedAcks:
    def test_acknowledged_writes_survive_losing_the_host(
        self, replica_kind: str, tmp_path: Path
    ) -> None:
        """Every write acknowledged with wait=replicated is in the history a replacement central
        restores, with the same hash, although nothing else shipped it."""
        first = start_central(tmp_path / "a", replica_kind, sync_interval=SLOW_SYNC_S)
        try:
            client = CentralClient(first.url, first.admin_token, timeout=30, wait="replicated")
            acked = _writes(client, 20)
        finally:
            lose_host(first)
        second = start_central(tmp_path / "b", replica_kind, sync_interval=SLOW_SYNC_S)
        try:
            history = _history(CentralClient(second.url, second.admin_token))
            lost = [(rev, h) for rev, h in acked if history.get(rev) != h]
            expected: list[tuple[int, str]] = []
            assert expected == lost
        finally:
            assert 0 == second.stop()

    def test_server_setting_acknowledges_every_write_replicated(self, tmp_path: Path) -> None:
        """With write_ack=replicated a plain write (no ?wait=) is acknowledged replicated."""
        replica = f"file://{tmp_path / 'replica'}"
        env = {"REG_WRITE_ACK": "replicated"}
        first = start_central(tmp_path / "a", replica, env=env, sync_interval=SLOW_SYNC_S)
        try:
            acked = _writes(CentralClient(first.url, first.admin_token, timeout=30), 5)
        finally:
            lose_host(first)
        second = start_central(tmp_path / "b", replica, sync_interval=SLOW_SYNC_S)
        try:
            history = _history(CentralClient(second.url, second.admin_token))
            expected: list[tuple[int, str]] = []
            assert expected == [(rev, h) for rev, h in acked if history.get(rev) != h]
        finally:
            assert 0 == second.stop()

    def test_store_down_answers_not_replicated_and_keeps_the_write(
        self, moto: MotoProc, tmp_path: Path
    ) -> None:
        """With S3 down a wait=replicated write is 503 not_replicated naming its revision; the
        write is committed, and ships once S3 is back."""
        replica = s3_replica_url(moto)
        env = {"REG_REPLICATED_TIMEOUT_S": "2"}
        central = start_central(tmp_path / "a", replica, env=env)
        try:
            client = CentralClient(central.url, central.admin_token, timeout=30)
            replicated = CentralClient(
                central.url, central.admin_token, timeout=30, wait="replicated"
            )
            client.create_model("fraud")
            moto.stop()
            with pytest.raises(NotReplicated) as info:
                replicated.push("fraud", artifact_uri="s3://m/fraud/1", sha256=DIGEST)
            revision = info.value.details["revision"]
            stored = client.get_version("fraud", 1)
            moto.start_again()
            # litestream reconnects with its own backoff: the first writes may still time out
            confirmed = wait_for(
                lambda: replicated.update_model("fraud", description="after the outage"),
                timeout=60,
                interval=0.5,
                what="a replicated write once S3 is back",
            )
            expected = (True, 1, True)
            assert expected == (
                isinstance(revision, int),
                stored["version"],
                confirmed["revision"] > revision,
            )
        finally:
            assert 0 == central.stop()

    def test_bad_wait_changes_nothing(self, central: CentralProc) -> None:
        """?wait= other than local or replicated is 400 invalid_field before anything is
        written."""
        before = central.healthz()["revision"]
        client = CentralClient(central.url, central.admin_token, wait="eventually")
        with pytest.raises(InvalidField) as info:
            client.create_model("fraud")
        expected = ("wait", before)
        assert expected == (info.value.details["field"], central.healthz()["revision"])

    def test_replicated_needs_a_replica(self, tmp_path: Path) -> None:
        """Without replication, wait=replicated is refused (no write can be acknowledged so)."""
        central = start_central(tmp_path / "a", "none")
        try:
            client = CentralClient(central.url, central.admin_token, wait="replicated")
            with pytest.raises(InvalidField):
                client.create_model("fraud")
            expected = 0
            assert expected == len(client.list_models()["items"])
        finally:
            stop_process(central.proc)
