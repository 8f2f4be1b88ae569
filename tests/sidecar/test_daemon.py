"""The sidecar against a real central and real Litestream, file:// and S3 (moto) replicas."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelreg.central.client import CentralClient
from tests.conftest import BUCKET, s3_replica_url
from tests.procs import CentralProc, MotoProc, start_central, wait_for
from tests.sidecar.helpers import Conn, SidecarProc, short_dir, start_sidecar, wait_answer

pytestmark = pytest.mark.integration


def staging(version: int) -> Any:
    return lambda answer: answer.get("ok") and answer["result"]["version"] == version


def seed(central: CentralProc) -> CentralClient:
    """Model ``fraud`` with v1 and v2, alias ``staging`` -> 1."""
    client = CentralClient(central.url, central.admin_token)
    client.create_model("fraud")
    client.push("fraud", "s3://models/fraud/1", "1" * 64)
    client.push("fraud", "s3://models/fraud/2", "2" * 64)
    client.set_alias("fraud", "staging", 1)
    return client


@pytest.fixture
def started(replica_kind: str, tmp_path: Path) -> Iterator[tuple[CentralClient, SidecarProc]]:
    central = start_central(tmp_path / "central", replica_url=replica_kind)
    sidecar: SidecarProc | None = None
    try:
        client = seed(central)
        sidecar = start_sidecar(replica_kind)
        yield client, sidecar
    finally:
        if sidecar is not None:
            sidecar.stop()
        central.stop()


class TestFollowsCentral:
    def test_promotion_reaches_resolve_watch_and_min_revision(
        self, started: tuple[CentralClient, SidecarProc]
    ) -> None:
        """A promotion at central shows in resolve, in a watch, and releases a min_revision wait."""
        client, sidecar = started
        request = {"op": "resolve", "model": "fraud", "ref": "staging"}
        wait_answer(sidecar, staging(1), request)
        with Conn(sidecar.socket, timeout=30) as watch, Conn(sidecar.socket, timeout=30) as waiter:
            first = watch.ask({"op": "watch", "model": "fraud", "ref": "staging", "id": "w"})
            assert (1, "w") == (first["result"]["version"], first["id"])
            move = client.set_alias("fraud", "staging", 2)
            waiter.send({**request, "min_revision": move["revision"], "wait_ms": 30_000})
            waited = waiter.read()
            assert 2 == waited["result"]["version"]
            assert waited["revision"] >= move["revision"]
            pushed = watch.read()
            assert (2, "w") == (pushed["result"]["version"], pushed["id"])
        assert 2 == sidecar.resolve("fraud", "staging")["result"]["version"]
        status = sidecar.status()
        assert (True, False, "following") == (
            status["ready"],
            status["stale"],
            status["follower"]["state"],
        )


def _age(sidecar: SidecarProc) -> int:
    answer = sidecar.resolve("fraud", "staging")
    assert answer["ok"] is True, answer
    age: int = answer["age_ms"]
    return age


@pytest.mark.slow
class TestObjectStorageOutage:
    @pytest.fixture
    def s3_central(self, moto: MotoProc, tmp_path: Path) -> Iterator[tuple[CentralProc, str]]:
        url = s3_replica_url(moto)
        central = start_central(tmp_path / "central", replica_url=url)
        try:
            yield central, url
        finally:
            central.stop()

    def test_keeps_answering_goes_stale_and_catches_up(
        self, moto: MotoProc, s3_central: tuple[CentralProc, str]
    ) -> None:
        """With S3 down the sidecar answers, age grows, status says stale; then it catches up."""
        central, url = s3_central
        client = seed(central)
        sidecar = start_sidecar(url, stale_after=2)
        try:
            request = {"op": "resolve", "model": "fraud", "ref": "staging"}
            wait_answer(sidecar, staging(1), request)
            moto.stop()
            first_age = _age(sidecar)
            wait_for(lambda: sidecar.status()["stale"], timeout=30, what="stale")
            assert _age(sidecar) > first_age
            status, health = sidecar.healthz()
            assert (200, True, True) == (status, health["ready"], health["stale"])

            moto.start_again()
            moto.create_bucket(BUCKET)  # moto forgets everything on restart
            client.set_alias("fraud", "staging", 2)
            wait_answer(sidecar, staging(2), request, timeout=120)
            wait_for(lambda: not sidecar.status()["stale"], timeout=60, what="fresh again")
        finally:
            sidecar.stop()

    def test_restart_during_outage_answers_from_local_copy(
        self, moto: MotoProc, s3_central: tuple[CentralProc, str]
    ) -> None:
        """A sidecar restarted while S3 is down answers from its local copy at once."""
        central, url = s3_central
        seed(central)
        data_dir = short_dir() / "data"
        sidecar = start_sidecar(url, data_dir)
        try:
            wait_answer(sidecar, staging(1), {"op": "resolve", "model": "fraud", "ref": "staging"})
        finally:
            sidecar.stop()
        moto.stop()
        sidecar = start_sidecar(url, data_dir)
        try:
            answer = sidecar.resolve("fraud", "staging")
            assert (True, 1) == (answer["ok"], answer["result"]["version"])
            assert sidecar.status()["ready"] is True
        finally:
            sidecar.stop()
            moto.start_again()  # lets central's final flush finish instead of timing out
            moto.create_bucket(BUCKET)
