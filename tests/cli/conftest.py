"""Fixtures for the ``reg`` command tests: a real central app served in-process over TCP.

``central_server`` runs :func:`modelreg.central.app.create_app` on 127.0.0.1 (a free port) in a
background thread with its own event loop, on a fresh data directory without replication, and
creates an ``approver`` and a ``deployer`` token besides the admin one, so four eyes can be
satisfied. ``reg`` is driven through click's ``CliRunner``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from modelreg.central.app import create_app
from modelreg.central.client import CentralClient
from modelreg.central.config import CentralConfig
from modelreg.cli.main import root
from tests.clirunner import CliRunner, Result

#: Every REG_* variable a developer's shell might set, unset for each invocation.
CLEAN_ENV: dict[str, str | None] = {
    name: None
    for name in (
        "REG_CENTRAL_URL",
        "REG_TOKEN",
        "REG_TOKEN_FILE",
        "REG_SOCKET",
        "REG_DATA_DIR",
    )
}
START_TIMEOUT_S = 30.0


class InProcessCentral:
    """Central's real app on a real SQLite file, served by aiohttp in a background thread."""

    def __init__(self, data_dir: Path) -> None:
        self.config = CentralConfig(
            data_dir=data_dir,
            listen="127.0.0.1:0",
            replica_url=None,
            heartbeat_interval_s=0,
            # webhook tests point at receivers on loopback
            webhook_allow_private=True,
            webhook_retry_initial_s=0.05,
        )
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(START_TIMEOUT_S)

    async def _start(self) -> None:
        self._runner = web.AppRunner(create_app(self.config))
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def stop(self) -> None:
        if self._runner is not None:
            future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            future.result(START_TIMEOUT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_TIMEOUT_S)
        self._loop.close()

    @property
    def admin_token(self) -> str:
        return self.config.admin_token_file.read_text().strip()


@dataclass
class Reg:
    """``reg`` pointed at one central, with the secrets of the tokens made for the tests."""

    server: InProcessCentral
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, token: str = "admin") -> CentralClient:
        """A client acting as the token named ``token``."""
        return CentralClient(self.url, self.tokens[token])

    def __call__(
        self,
        *args: str,
        token: str | None = "admin",
        env: dict[str, str] | None = None,
        global_args: Sequence[str] = (),
    ) -> Result:
        """Run ``reg --central URL [--token SECRET] *global_args *args``; stdout and stderr
        kept apart."""
        argv = ["--central", self.url, *global_args]
        if token is not None:
            argv += ["--token", self.tokens[token]]
        return CliRunner().invoke(root, [*argv, *args], env={**CLEAN_ENV, **(env or {})})

    def seed_version(
        self, model: str = "fraud", sha256: str = "a" * 64, approve: bool = False
    ) -> dict[str, Any]:
        """Make sure ``model`` exists and register one version (approved by the approver)."""
        admin = self.client()
        try:
            admin.get_model(model)
        except Exception:
            admin.create_model(model)
        record = admin.register_version(model, f"s3://models/{model}/{sha256[:8]}", sha256)
        if approve:
            self.client("approver").approve(model, record["version"], "ok")
        return record


@pytest.fixture
def central_server(tmp_path: Path) -> Iterator[InProcessCentral]:
    """A started in-process central on a fresh data directory."""
    server = InProcessCentral(tmp_path / "central")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def reg(central_server: InProcessCentral) -> Reg:
    """``reg`` against ``central_server`` with ``admin``, ``approver`` and ``deployer`` tokens
    (and a ``reader``)."""
    runner = Reg(central_server, {"admin": central_server.admin_token})
    admin = runner.client()
    for role in ("approver", "deployer", "reader", "publisher"):
        runner.tokens[role] = admin.create_token(role, role)["secret"]
    return runner


def one_line_error(result: Result) -> str:
    """The single ``Error: …`` line a failed command printed on stderr (asserts it is one)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]
