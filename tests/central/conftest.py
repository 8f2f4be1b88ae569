"""Fixtures for central's HTTP tests: the real app on a real SQLite file, through aiohttp's
test client, with one token per role and a seeded model.

The seeded model ``fraud`` (registered by the ``seed`` publisher token, decided by ``boss``):

* version 1 approved, version 2 registered (undecided), version 3 approved;
* ``production`` (protected) and ``staging`` each moved 1 -> 3, so both can roll back to 1.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from json import dumps
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from modelreg.central.app import create_app
from modelreg.central.appkeys import AUTH, REGISTRY
from modelreg.central.config import CentralConfig

ROLES = ("reader", "publisher", "approver", "deployer", "admin")
SHA = "a" * 64
SHA2 = "b" * 64
SHA3 = "c" * 64
#: A well-formed secret that no token has.
BAD_TOKEN = "mr_" + "x" * 43


@dataclass
class Api:
    """The test client plus the secrets of the tokens the fixtures made."""

    client: TestClient[Any, Any]
    config: CentralConfig
    tokens: dict[str, str] = field(default_factory=dict)

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = "admin",
        json: Any = None,
        data: Any = None,
        params: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """Send one request as the token named ``token`` (a role name, ``admin``, or a raw
        ``Bearer`` value when it starts with ``mr_``); return (status, decoded JSON or text)."""
        sent = dict(headers or {})
        body: Any = None
        if json is not None:
            body = io.BytesIO(dumps(json).encode())
            sent.setdefault("Content-Type", "application/json")
        elif isinstance(data, bytes | str):
            # large raw bytes make aiohttp warn (ResourceWarning); a stream does not
            body = io.BytesIO(data.encode() if isinstance(data, str) else data)
        else:
            body = data
        if token is not None:
            secret = token if token.startswith("mr_") else self.tokens[token]
            sent["Authorization"] = f"Bearer {secret}"
        async with self.client.request(
            method, path, data=body, params=params, headers=sent
        ) as answer:
            if answer.content_type == "application/json":
                return answer.status, await answer.json()
            return answer.status, await answer.text()


def db_state(config: CentralConfig) -> dict[str, int]:
    """Row counts of every registry table and the revision, read from the file itself."""
    conn = sqlite3.connect(f"file:{config.registry_db}?mode=ro", uri=True)
    try:
        tables = [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if r[0] != "heartbeat"
        ]
        state = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}
        state["revision"] = conn.execute(
            "SELECT COALESCE(MAX(revision), 0) FROM events"
        ).fetchone()[0]
        return state
    finally:
        conn.close()


def loopback_config(tmp_path: Path, **settings: Any) -> CentralConfig:
    """The ``config`` of a test whose webhooks point at receivers on 127.0.0.1."""
    return CentralConfig(
        data_dir=tmp_path / "data",
        replica_url=None,
        heartbeat_interval_s=0,
        webhook_allow_private=True,
        **settings,
    )


@pytest.fixture
def config(tmp_path: Path) -> CentralConfig:
    return CentralConfig(data_dir=tmp_path / "data", replica_url=None, heartbeat_interval_s=0)


@pytest.fixture
async def api(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]], config: CentralConfig
) -> Api:
    """A started central (no replication) with one token per role, each named after it."""
    client = await aiohttp_client(create_app(config))
    result = Api(client, config)
    result.tokens["admin"] = config.admin_token_file.read_text().strip()
    auth = client.app[AUTH]
    for role in ROLES[:-1]:  # the admin role is the bootstrap admin token
        secret = (await auth.create("admin", role, role)).secret
        result.tokens[role] = secret
    # the writer of the seeded versions, and a second approver for the four-eyes rule
    for name, role in (("seed", "publisher"), ("boss", "admin")):
        secret = (await auth.create("admin", name, role)).secret
        result.tokens[name] = secret
    return result


@pytest.fixture
async def seeded(api: Api) -> Api:
    """``api`` with the model ``fraud`` described in this module's docstring."""
    registry = api.client.app[REGISTRY]
    await registry.create_model("seed", "fraud", description="card fraud")
    for n, sha in enumerate((SHA, SHA2, SHA3), start=1):
        await registry.register_version(
            "seed", "fraud", artifact_uri=f"s3://models/fraud/{n}", sha256=sha, run_id=f"run-{n}"
        )
    await registry.decide("boss", "fraud", 1, True, comment="ok")
    await registry.decide("boss", "fraud", 3, True, comment="ok")
    for alias in ("production", "staging"):
        await registry.set_alias("boss", "fraud", alias, 1)
        await registry.set_alias("boss", "fraud", alias, 3)
    return api
