"""central.auth without HTTP: the role lattice, scopes, the admin bootstrap and token storage."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelreg.central.auth import ROLES, Auth, Token, hash_secret, new_secret, role_includes
from modelreg.central.config import CentralConfig
from modelreg.errors import (
    AlreadyExists,
    InvalidField,
    InvalidName,
    PermissionDenied,
    TokenNotFound,
    Unauthenticated,
)


@pytest.fixture
def config(tmp_path: Path) -> CentralConfig:
    return CentralConfig(data_dir=tmp_path / "data")


@pytest.fixture
async def auth(config: CentralConfig) -> AsyncIterator[Auth]:
    opened = Auth(config)
    await opened.open()
    yield opened
    await opened.close()


def _admin_secret(config: CentralConfig) -> str:
    return config.admin_token_file.read_text().strip()


class TestRoles:
    def test_lattice(self) -> None:
        """approver and deployer each include publisher but not each other; admin has all."""
        table = {
            held: {needed for needed in ROLES if role_includes(held, needed)} for held in ROLES
        }
        expected = {
            "reader": {"reader"},
            "publisher": {"reader", "publisher"},
            "approver": {"reader", "publisher", "approver"},
            "deployer": {"reader", "publisher", "deployer"},
            "admin": set(ROLES),
        }
        assert expected == table

    def test_scope_globs(self) -> None:
        """A scoped token covers the models its globs match; an unscoped one covers all."""
        scoped = Token("t", "reader", ("fraud-*", "churn"), "admin", "now")
        unscoped = Token("u", "reader", (), "admin", "now")
        names = ("fraud-eu", "fraud", "churn", "churn-2")
        expected = ([True, False, True, False], [True] * 4)
        assert expected == ([scoped.covers(n) for n in names], [unscoped.covers(n) for n in names])

    def test_require_names_what_is_missing(self) -> None:
        """require raises PermissionDenied naming the needed role, or the model out of scope."""
        token = Token("t", "publisher", ("a*",), "admin", "now")
        with pytest.raises(PermissionDenied) as by_role:
            token.require("approver", "abc")
        with pytest.raises(PermissionDenied) as by_scope:
            token.require("publisher", "zeta")
        expected = ("approver", "zeta")
        assert expected == (by_role.value.details["required"], by_scope.value.details["model"])

    def test_secret_format(self) -> None:
        """Secrets are mr_ and 43 urlsafe characters, and differ every time."""
        secrets_ = {new_secret() for _ in range(50)}
        expected = (50, True)
        assert expected == (
            len(secrets_),
            all(re.fullmatch(r"mr_[A-Za-z0-9_-]{43}", s) for s in secrets_),
        )


class TestAdminBootstrap:
    async def test_first_start_writes_a_private_token_file(
        self, auth: Auth, config: CentralConfig
    ) -> None:
        """The first start creates the admin token and a 0600 file holding its secret."""
        token = auth.authenticate(f"Bearer {_admin_secret(config)}")
        mode = stat.S_IMODE(os.stat(config.admin_token_file).st_mode)
        expected = ("admin", "admin", (), 0o600)
        assert expected == (token.name, token.role, token.models, mode)

    async def test_secrets_database_is_private(self, auth: Auth, config: CentralConfig) -> None:
        """secrets.db and its WAL files are readable by the owner only (0600)."""
        files = sorted(config.data_dir.glob("secrets.db*"))
        modes = {p.name: stat.S_IMODE(os.stat(p).st_mode) for p in files}
        expected = {"secrets.db": 0o600, "secrets.db-shm": 0o600, "secrets.db-wal": 0o600}
        assert expected == modes

    async def test_restart_reuses_a_valid_file(self, config: CentralConfig) -> None:
        """A second start keeps the admin secret of the file."""
        first = Auth(config)
        await first.open()
        secret = _admin_secret(config)
        await first.close()
        second = Auth(config)
        await second.open()
        try:
            expected = (secret, "admin")
            assert expected == (_admin_secret(config), second.authenticate(f"Bearer {secret}").name)
        finally:
            await second.close()

    @pytest.mark.parametrize("damage", ["delete", "overwrite"])
    async def test_missing_or_stale_file_gets_a_new_admin_secret(
        self, config: CentralConfig, damage: str
    ) -> None:
        """Without a valid file the admin token gets a new secret; the old one stops working."""
        first = Auth(config)
        await first.open()
        old = _admin_secret(config)
        await first.close()
        if damage == "delete":
            config.admin_token_file.unlink()
        else:
            config.admin_token_file.write_text(new_secret())
        second = Auth(config)
        await second.open()
        try:
            new = _admin_secret(config)
            with pytest.raises(Unauthenticated):
                second.authenticate(f"Bearer {old}")
            expected = (True, "admin")
            assert expected == (new != old, second.authenticate(f"Bearer {new}").name)
        finally:
            await second.close()


class TestTokens:
    async def test_create_authenticate_revoke(self, auth: Auth, config: CentralConfig) -> None:
        """A created token authenticates with its scope; after revocation it does not."""
        admin = auth.authenticate(f"Bearer {_admin_secret(config)}")
        change = await auth.create("admin", "ci", "publisher", ["fraud-*"])
        created, secret = change.token, change.secret
        seen = auth.authenticate(f"Bearer {secret}")
        await auth.revoke(admin, "ci")
        with pytest.raises(Unauthenticated):
            auth.authenticate(f"Bearer {secret}")
        expected = (created, ("fraud-*",), "admin")
        assert expected == (seen, seen.models, seen.created_by)

    async def test_only_hashes_are_stored(self, auth: Auth, config: CentralConfig) -> None:
        """secrets.db holds the secret's sha256, never the secret."""
        secret = (await auth.create("admin", "ci", "reader")).secret
        conn = sqlite3.connect(config.secrets_db)
        try:
            stored = conn.execute("SELECT hash FROM tokens WHERE name = 'ci'").fetchone()[0]
            journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        finally:
            conn.close()
        raw = b"".join(p.read_bytes() for p in config.data_dir.glob("secrets.db*"))
        expected = (hash_secret(secret), "wal", False)
        assert expected == (stored, journal, secret.encode() in raw)

    @pytest.mark.parametrize(
        ("name", "role", "models", "error"),
        [
            ("Bad Name", "reader", None, InvalidName),
            ("ok", "root", None, InvalidField),
            ("ok", "reader", "fraud-*", InvalidField),
            ("ok", "reader", ["UPPER"], InvalidField),
            ("ok", "reader", [1], InvalidField),
            ("ok", "reader", ["a"] * 101, InvalidField),
        ],
    )
    async def test_invalid_tokens_are_refused(
        self, auth: Auth, name: str, role: str, models: object, error: type[Exception]
    ) -> None:
        """Bad names, roles and scopes raise before anything is stored."""
        with pytest.raises(error):
            await auth.create("admin", name, role, models)
        expected = ["admin"]
        assert expected == [t.name for t in await auth.tokens()]

    async def test_duplicate_and_missing(self, auth: Auth, config: CentralConfig) -> None:
        """A second token of one name is AlreadyExists; revoking a missing one TokenNotFound."""
        admin = auth.authenticate(f"Bearer {_admin_secret(config)}")
        await auth.create("admin", "ci", "reader")
        with pytest.raises(AlreadyExists):
            await auth.create("admin", "ci", "admin")
        with pytest.raises(TokenNotFound):
            await auth.revoke(admin, "ghost")
        with pytest.raises(PermissionDenied):
            await auth.revoke(admin, "admin")
        expected = ["admin", "ci"]
        assert expected == [t.name for t in await auth.tokens()]

    async def test_touch_records_last_use(self, auth: Auth) -> None:
        """touch stores last_used_at (at most once a minute per token)."""
        created = (await auth.create("admin", "ci", "reader")).token
        await auth.touch(created)
        first = {t.name: t.last_used_at for t in await auth.tokens()}["ci"]
        await auth.touch(created)
        second = {t.name: t.last_used_at for t in await auth.tokens()}["ci"]
        expected = (True, first)
        assert expected == (first is not None, second)

    @pytest.mark.parametrize(
        "header",
        [None, "", "Bearer", "Basic abc", "Bearer mr_short", "Bearer " + "mr_" + "x" * 43],
    )
    async def test_bad_headers_are_unauthenticated(self, auth: Auth, header: str | None) -> None:
        """Missing, malformed and unknown credentials raise Unauthenticated."""
        with pytest.raises(Unauthenticated):
            auth.authenticate(header)
