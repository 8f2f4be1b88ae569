"""After a loss a revision number is issued again to another event: ``min_revision`` with the
``revision_hash`` central acknowledged must not be satisfied by someone else's event. Real
central, litestream and sidecar."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelreg.central.client import CentralClient
from tests.procs import start_central, wait_for
from tests.replication.helpers import DIGEST
from tests.replication.test_durability import SLOW_SYNC_S, lose_host
from tests.sidecar.helpers import start_sidecar

pytestmark = pytest.mark.integration


def _code(answer: dict[str, object]) -> object:
    error = answer.get("error")
    return error.get("code") if isinstance(error, dict) else None


class TestReissuedRevision:
    def test_min_revision_with_hash_is_not_satisfied_by_another_event(self, tmp_path: Path) -> None:
        """A write acknowledged at revision n is lost with central's host; the replacement
        issues n to another event. A sidecar at n answers history_mismatch to a resolve that
        names n's hash, while the number alone would be satisfied silently."""
        replica = f"file://{tmp_path / 'replica'}"
        first = start_central(tmp_path / "a", replica, sync_interval=0.2)
        client = CentralClient(first.url, first.admin_token)
        client.create_model("fraud")
        client.push("fraud", artifact_uri="s3://m/fraud/1", sha256=DIGEST)
        sidecar = start_sidecar(replica)
        try:
            shipped = first.healthz()["revision"]
            wait_for(
                lambda: sidecar.status()["revision"] == shipped, what="the sidecar at the head"
            )
            first.stop()
            # the lost write: acknowledged by a central whose litestream never ships it
            slow = start_central(tmp_path / "a", replica, sync_interval=SLOW_SYNC_S)
            try:
                lost = CentralClient(slow.url, slow.admin_token).push(
                    "fraud", artifact_uri="s3://m/fraud/2", sha256="cd" * 32
                )[0]
            finally:
                lose_host(slow)
            second = start_central(tmp_path / "b", replica, sync_interval=0.2)
            try:
                head = second.healthz()
                assert head["revision"] >= lost["revision"]  # the number was issued again
                wait_for(
                    lambda: sidecar.status()["revision"] >= lost["revision"],
                    what="the sidecar to follow the new history",
                )
                request = {"min_revision": lost["revision"], "wait_ms": 2000}
                checked = sidecar.resolve(
                    "fraud", "latest", revision_hash=lost["revision_hash"], **request
                )
                unchecked = sidecar.resolve("fraud", "latest", **request)
                ours = sidecar.resolve(
                    "fraud",
                    "latest",
                    min_revision=head["revision"],
                    revision_hash=head["revision_hash"],
                    wait_ms=2000,
                )
                expected = ("history_mismatch", True, True)
                assert expected == (_code(checked), unchecked["ok"], ours["ok"])
                assert lost["revision_hash"] == checked["error"]["revision_hash"]
            finally:
                second.stop()
        finally:
            sidecar.stop()

    def test_bad_revision_hash_is_refused(self, offline_sidecar: object) -> None:
        """A revision_hash that is not 64 hex digits, or without min_revision, is bad_request
        material: invalid_field naming it."""
        answers = [
            offline_sidecar.resolve(  # type: ignore[attr-defined]
                "m", "latest", min_revision=1, revision_hash="xyz"
            ),
            offline_sidecar.resolve("m", "latest", revision_hash="ab" * 32),  # type: ignore[attr-defined]
        ]
        expected = [("invalid_field", "revision_hash")] * 2
        assert expected == [(_code(a), a["error"].get("field")) for a in answers]
