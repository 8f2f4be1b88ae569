"""Token changes in the hash-chained event log: who created or revoked which token, with which
role and scope, in the same write as the change, and never a secret or its hash."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from modelreg.central.app import create_app
from modelreg.central.appkeys import REGISTRY
from modelreg.central.auth import Auth, hash_secret
from modelreg.central.config import CentralConfig
from modelreg.central.registry import Registry
from modelreg.errors import InvalidField, InvalidName, Unavailable
from tests.central.conftest import Api, db_state


async def _events(api: Api, after: int = 0) -> list[dict[str, Any]]:
    status, body = await api.call("GET", "/v1/events", params={"after": str(after)})
    assert status == 200, body
    return list(body["items"])


def _summary(event: dict[str, Any]) -> tuple[Any, ...]:
    return (event["action"], event["subject"], event["actor"], event["details"])


def _stored(path: Path) -> bytes:
    """Every byte of a database file and its WAL and shared-memory files."""
    return b"".join(p.read_bytes() for p in sorted(path.parent.glob(path.name + "*")))


class TestEvents:
    async def test_create_is_an_event_answered_with_its_revision(self, api: Api) -> None:
        """POST /v1/tokens appends token.create (subject, role, scope, actor) and answers its
        revision."""
        before = await api.client.app[REGISTRY].revision()
        status, body = await api.call(
            "POST", "/v1/tokens", json={"name": "ci", "role": "publisher", "models": ["fraud-*"]}
        )
        events = await _events(api, before)
        expected = (
            201,
            [("token.create", "ci", "admin", {"role": "publisher", "models": ["fraud-*"]})],
            [before + 1] * 3,
        )
        assert expected == (
            status,
            [_summary(e) for e in events],
            [body["revision"], events[0]["revision"], await api.client.app[REGISTRY].revision()],
        )

    async def test_revoke_is_an_event_answered_with_its_revision(self, api: Api) -> None:
        """DELETE /v1/tokens/{name} appends token.revoke naming the revoker and the token's
        role and scope, and answers its revision."""
        await api.call("POST", "/v1/tokens", json={"name": "ci", "role": "reader", "models": []})
        before = await api.client.app[REGISTRY].revision()
        status, body = await api.call("DELETE", "/v1/tokens/ci", token="boss")
        events = await _events(api, before)
        expected = (200, [("token.revoke", "ci", "boss", {"role": "reader", "models": []})])
        assert expected == (status, [_summary(e) for e in events])
        assert before + 1 == body["revision"]

    async def test_the_bootstrap_admin_token_is_the_first_event(self, api: Api) -> None:
        """A fresh central's first event records the admin token it issued, by ``central``."""
        first = (await _events(api))[0]
        expected = (1, ("token.create", "admin", "central", {"role": "admin", "models": []}))
        assert expected == (first["revision"], _summary(first))

    async def test_failed_changes_write_no_event(self, api: Api) -> None:
        """A duplicate, an invalid request, the reserved name ``central`` (the bootstrap actor),
        an unknown token and a self-revocation change neither database."""
        await api.call("POST", "/v1/tokens", json={"name": "ci", "role": "reader"})
        before = db_state(api.config)
        answers = [
            (await api.call("POST", "/v1/tokens", json={"name": "ci", "role": "admin"}))[0],
            (await api.call("POST", "/v1/tokens", json={"name": "Bad", "role": "admin"}))[0],
            (await api.call("POST", "/v1/tokens", json={"name": "x", "role": "root"}))[0],
            (await api.call("POST", "/v1/tokens", json={"name": "central", "role": "admin"}))[0],
            (await api.call("DELETE", "/v1/tokens/ghost"))[0],
            (await api.call("DELETE", "/v1/tokens/admin"))[0],
        ]
        expected = ([409, 400, 400, 400, 404, 403], before)
        assert expected == (answers, db_state(api.config))

    async def test_chain_verifies_and_no_secret_reaches_the_registry(self, api: Api) -> None:
        """After creating and revoking tokens the chain verifies, and registry.db (with its
        WAL) holds no secret and no hash of one."""
        _, made = await api.call("POST", "/v1/tokens", json={"name": "ci", "role": "deployer"})
        await api.call("DELETE", "/v1/tokens/ci")
        status, verified = await api.call("GET", "/v1/audit/verify")
        raw = _stored(api.config.registry_db)
        secrets = [made["secret"], *api.tokens.values()]
        leaked = [s for s in secrets if s.encode() in raw or hash_secret(s).encode() in raw]
        expected: tuple[int, bool, list[str]] = (200, True, [])
        assert expected == (status, verified["ok"], leaked)

    async def test_a_restart_reusing_the_admin_file_writes_no_event(
        self,
        aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
        config: CentralConfig,
    ) -> None:
        """Starting again with a valid admin token file issues nothing and records nothing."""
        first = await aiohttp_client(create_app(config))
        revision = await first.app[REGISTRY].revision()
        await first.close()
        second = await aiohttp_client(create_app(config))
        expected = (1, 1)
        assert expected == (revision, await second.app[REGISTRY].revision())


class _FailingLog:
    """A token log that is down: every record raises ``Unavailable``."""

    async def record_token(
        self, actor: str, action: str, name: str, role: str, models: list[str]
    ) -> dict[str, Any]:
        raise Unavailable("the registry is not open")


class _HeldLog:
    """A token log that waits for ``release`` before writing the event to ``registry``."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def record_token(
        self, actor: str, action: str, name: str, role: str, models: list[str]
    ) -> dict[str, Any]:
        self.started.set()
        await self.release.wait()
        return await self.registry.record_token(actor, action, name, role, models)


def _token_rows(config: CentralConfig) -> list[tuple[str, str]]:
    conn = sqlite3.connect(config.secrets_db)
    try:
        return [tuple(r) for r in conn.execute("SELECT name, role FROM tokens ORDER BY name")]
    finally:
        conn.close()


class TestAtomicity:
    @pytest.fixture
    def config(self, tmp_path: Path) -> CentralConfig:
        return CentralConfig(data_dir=tmp_path / "data", replica_url=None)

    @pytest.fixture
    async def registry(self, config: CentralConfig) -> AsyncIterator[Registry]:
        async with Registry(config) as opened:
            yield opened

    async def test_no_token_without_its_event(self, config: CentralConfig) -> None:
        """When the event cannot be written the token is not created: secrets.db is unchanged
        and its secret does not authenticate."""
        async with Registry(config) as registry:
            auth = Auth(config, log=registry)
            await auth.open()
            await auth.close()
        failing = Auth(config, log=_FailingLog())
        await failing.open()
        try:
            with pytest.raises(Unavailable):
                await failing.create("admin", "ci", "reader")
            rows = _token_rows(config)
            tokens = [t.name for t in await failing.tokens()]
        finally:
            await failing.close()
        expected = ([("admin", "admin")], ["admin"])
        assert expected == (rows, tokens)

    async def test_a_revocation_without_its_event_keeps_the_token(
        self, config: CentralConfig, registry: Registry
    ) -> None:
        """When the event cannot be written the revoked token stays, and still authenticates."""
        auth = Auth(config, log=registry)
        await auth.open()
        secret = (await auth.create("admin", "ci", "reader")).secret
        admin = auth.authenticate(f"Bearer {config.admin_token_file.read_text().strip()}")
        await auth.close()
        failing = Auth(config, log=_FailingLog())
        await failing.open()
        try:
            with pytest.raises(Unavailable):
                await failing.revoke(admin, "ci")
            still = failing.authenticate(f"Bearer {secret}").name
        finally:
            await failing.close()
        assert ("ci", [("admin", "admin"), ("ci", "reader")]) == (still, _token_rows(config))

    async def test_a_cancelled_create_keeps_the_pair_and_the_lock(
        self, config: CentralConfig, registry: Registry
    ) -> None:
        """Cancelling a create while its event is being written still ends with both the
        token and its event (or neither), and the next change goes through."""
        log = _HeldLog(registry)
        auth = Auth(config, log=log)
        log.release.set()
        await auth.open()
        try:
            log.release.clear()
            log.started.clear()
            task = asyncio.create_task(auth.create("admin", "ci", "reader"))
            await log.started.wait()
            task.cancel()
            log.release.set()
            with pytest.raises(asyncio.CancelledError):
                await task
            events = (await registry.events())["items"]
            await auth.create("admin", "next", "reader")
            rows = _token_rows(config)
        finally:
            await auth.close()
        expected = (["admin", "ci"], [("admin", "admin"), ("ci", "reader"), ("next", "reader")])
        assert expected == ([e["subject"] for e in events], rows)

    async def test_a_failed_bootstrap_issues_no_admin_token(self, config: CentralConfig) -> None:
        """A first start whose event cannot be written fails and leaves no admin token."""
        failing = Auth(config, log=_FailingLog())
        with pytest.raises(Unavailable):
            await failing.open()
        assert [] == _token_rows(config)

    async def test_the_registry_validates_token_events(self, registry: Registry) -> None:
        """record_token refuses an unknown action, role, bad name or scope, writing nothing."""
        calls: list[tuple[str, str, str, Any]] = [
            ("token.rename", "ci", "reader", []),
            ("token.create", "ci", "root", []),
            ("token.create", "Bad Name", "reader", []),
            ("token.create", "ci", "reader", "fraud-*"),
            ("token.create", "ci", "reader", [""]),
        ]
        raised = []
        for action, name, role, models in calls:
            with pytest.raises((InvalidField, InvalidName)) as caught:
                await registry.record_token("admin", action, name, role, models)
            raised.append(type(caught.value).__name__)
        expected = (["InvalidField", "InvalidField", "InvalidName"] + ["InvalidField"] * 2, 0)
        assert expected == (raised, await registry.revision())
