"""The stack's shortest real use against this installation (what ``.ci/floors`` runs)."""

from __future__ import annotations

import hashlib

import pytest

from tests.e2e.smoke import register_and_resolve
from tests.e2e.stack import start_up
from tests.procs import BIN_DIR

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class TestSmoke:
    def test_push_approve_promote_resolve(self) -> None:
        """A file pushed, approved and promoted resolves through ``from modelreg import Client``."""
        up = start_up()
        try:
            answer = register_and_resolve(up, BIN_DIR)
        finally:
            up.stop()
        digest = hashlib.sha256(b"churn weights, version 1\n").hexdigest()
        assert {"version": 1, "sha256": digest} == {k: answer[k] for k in ("version", "sha256")}
