"""A sidecar never serves a history that does not extend the one it served (issue 18, finding 2).

Central A publishes; its replica is deleted and central B, started on an empty data directory,
takes the same replica path over with a history of its own, which ends at a lower revision
than the one the sidecar serves, at the same revision, or at a higher one. The sidecar keeps
serving A's last good copy, reports ``diverged`` in its status and metrics (also across its
own restart), and adopts B's history only when ``reg sidecar adopt`` asks for it, or after
``--diverged-grace``.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelreg.central.client import CentralClient
from tests.procs import BIN_DIR, CentralProc, start_central, wait_for
from tests.sidecar.helpers import SidecarProc, http_get, start_sidecar, wait_answer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STAGING = {"op": "resolve", "model": "fraud", "ref": "staging"}
#: B's first model.
OTHER = {"op": "get", "model": "other"}


class Takeover:
    """Central A's history served by a sidecar, then the replica replaced by central B's."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.replica = tmp_path / "replica"
        self.centrals: list[CentralProc] = []
        self.sidecars: list[SidecarProc] = []
        self.served = 0

    @property
    def url(self) -> str:
        return f"file://{self.replica}"

    def start_central(self, name: str) -> CentralClient:
        central = start_central(self.tmp_path / name, self.url)
        self.centrals.append(central)
        return CentralClient(central.url, central.admin_token)

    def start_sidecar(self, data_dir: Path | None = None, *extra: str) -> SidecarProc:
        sidecar = start_sidecar(self.url, data_dir, stale_after=1.5, extra_args=extra)
        self.sidecars.append(sidecar)
        return sidecar

    def publish_a(self) -> CentralClient:
        client = self.start_central("a")
        client.create_model("fraud")
        for n in (1, 2):
            client.push("fraud", f"s3://models/fraud/{n}", str(n) * 64)
        self.served = int(client.set_alias("fraud", "staging", 1)["revision"])
        return client

    def replace_with_b(self, end: str) -> int:
        """Stop A, delete the replica, let B write until its revision is ``end`` relative to
        A's (``lower``, ``same``, ``higher``); B's last revision."""
        self.centrals[0].stop()
        shutil.rmtree(self.replica)
        client = self.start_central("b")
        target = {"lower": 2, "same": self.served, "higher": self.served + 3}[end]
        revision = int(client.create_model("other")["revision"])
        while revision < target:
            revision = int(client.create_model(f"other-{revision}")["revision"])
        assert target == revision
        return revision

    def stop(self) -> None:
        for sidecar in self.sidecars:
            sidecar.stop()
        for central in self.centrals:
            central.stop()


@pytest.fixture
def takeover(tmp_path: Path) -> Iterator[Takeover]:
    started = Takeover(tmp_path)
    try:
        yield started
    finally:
        started.stop()


def diverged(sidecar: SidecarProc) -> dict[str, Any] | None:
    result: dict[str, Any] | None = sidecar.status()["diverged"]
    return result


def metric(sidecar: SidecarProc, name: str) -> float:
    status, body = http_get(sidecar.http_socket, "/metrics")
    assert 200 == status
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def serves_a(sidecar: SidecarProc, revision: int) -> None:
    """Still A's last good copy: fraud@staging is v1 at A's revision; B's model is absent."""
    answer = sidecar.resolve("fraud", "staging")
    assert (True, 1, revision) == (answer["ok"], answer["result"]["version"], answer["revision"])
    assert "model_not_found" == sidecar.ask(OTHER)["error"]["code"]


def adopt(sidecar: SidecarProc) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(BIN_DIR / "reg"),
            "--socket",
            str(sidecar.socket),
            "sidecar",
            "adopt",
            "--data-dir",
            str(sidecar.data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


class TestNeverRewinds:
    @pytest.mark.parametrize("end", ["lower", "same", "higher"])
    def test_keeps_serving_the_last_good_copy_until_adopted(
        self, takeover: Takeover, end: str
    ) -> None:
        """B's history is refused whatever revision it reached; ``reg sidecar adopt`` takes it."""
        takeover.publish_a()
        sidecar = takeover.start_sidecar()
        wait_answer(sidecar, lambda a: a.get("revision") == takeover.served, STAGING)
        b_revision = takeover.replace_with_b(end)

        seen = wait_for(lambda: diverged(sidecar), timeout=120, what="diverged in status")
        serves_a(sidecar, takeover.served)
        assert (takeover.served, b_revision) == (seen["served_revision"], seen["revision"])
        assert (1.0, 1.0) == (
            metric(sidecar, "modelreg_sidecar_diverged"),
            metric(sidecar, "modelreg_sidecar_divergences_total"),
        )

        # A restart keeps refusing it: the saved index is the history this node served.
        sidecar.stop()
        again = takeover.start_sidecar(sidecar.data_dir)
        serves_a(again, takeover.served)
        wait_for(lambda: diverged(again), timeout=60, what="diverged after the restart")
        serves_a(again, takeover.served)

        done = adopt(again)
        assert 0 == done.returncode, done.stderr
        answer = again.ask(OTHER)
        assert (True, b_revision) == (answer["ok"], answer["revision"])
        assert "model_not_found" == again.resolve("fraud", "staging")["error"]["code"]
        assert (None, 1.0, 0.0) == (
            diverged(again),
            metric(again, "modelreg_sidecar_adoptions_total"),
            metric(again, "modelreg_sidecar_diverged"),
        )


class TestGrace:
    def test_adopts_by_itself_after_the_grace(self, takeover: Takeover) -> None:
        """With ``--diverged-grace`` the other history is adopted once it persisted that long."""
        takeover.publish_a()
        sidecar = takeover.start_sidecar(None, "--diverged-grace", "3")
        wait_answer(sidecar, lambda a: a.get("revision") == takeover.served, STAGING)
        b_revision = takeover.replace_with_b("lower")
        answer = wait_answer(sidecar, lambda a: a.get("ok"), OTHER, timeout=120)
        assert b_revision == answer["revision"]
        assert (1.0, 1.0, None) == (
            metric(sidecar, "modelreg_sidecar_divergences_total"),
            metric(sidecar, "modelreg_sidecar_adoptions_total"),
            diverged(sidecar),
        )


class TestAdoptCommand:
    def test_refuses_when_nothing_diverged(self, takeover: Takeover) -> None:
        """``reg sidecar adopt`` on a node serving its own history exits 1 and writes nothing."""
        takeover.publish_a()
        sidecar = takeover.start_sidecar()
        wait_answer(sidecar, lambda a: a.get("revision") == takeover.served, STAGING)
        done = adopt(sidecar)
        assert (1, False) == (done.returncode, (sidecar.data_dir / "adopt.json").exists())
        assert "nothing to adopt" in done.stderr
