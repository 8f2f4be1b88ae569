"""Bearer tokens: roles, model-name scopes, and the secrets database that holds their hashes.

Roles form a small lattice, not a line::

    reader < publisher < approver < admin
                       < deployer < admin

(approver and deployer each include publisher; admin includes everything). A token may be
scoped to model-name globs (``fraud-*``); an empty scope means every model.

Secrets look like ``mr_<43 urlsafe characters>`` and are shown once, when created; only their
sha256 is stored, in ``secrets.db`` (schema :data:`modelreg.central.schema.SECRETS_MIGRATIONS`),
which is never the replicated ``registry.db``. Every token is kept in memory too, keyed by hash, so
a request is authenticated without touching the disk.

On first start :meth:`Auth.open` creates the ``admin`` token and writes its secret to
``config.admin_token_file`` (mode 0600). When that file already holds a valid secret it is reused;
when it is missing or stale (a restored ``secrets.db`` on a new host) the ``admin`` token gets a
fresh secret and the file is rewritten.

Every token change (create, revoke, the admin token issued at start) is recorded in the
registry's hash-chained event log through a :class:`TokenLog` (the
:class:`~modelreg.central.registry. Registry`): ``token.create`` / ``token.revoke``, subject the
token's name, details ``{role, models}``, actor the token that did it (``central`` for the admin
token issued at start). The ``secrets.db`` change commits only once its event is written, so neither
exists without the other (short of a crash between the two commits, which leaves an event for a
change that did not happen, never a change without its event).
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import json
import logging
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from aiohttp import web

from modelreg.central.config import CentralConfig
from modelreg.central.pagetoken import KEY_BYTES
from modelreg.central.records import now
from modelreg.central.schema import SECRETS_MIGRATIONS, migrate
from modelreg.errors import (
    AlreadyExists,
    InvalidField,
    InvalidName,
    PermissionDenied,
    TokenNotFound,
    Unauthenticated,
)

__all__ = [
    "ADMIN_TOKEN_NAME",
    "MAX_SCOPE_GLOBS",
    "ROLES",
    "SECRET_PREFIX",
    "TOKEN",
    "Auth",
    "Token",
    "TokenChange",
    "TokenLog",
    "commit_with_event",
    "hash_secret",
    "new_secret",
    "role_includes",
]

log = logging.getLogger(__name__)

ROLES = ("reader", "publisher", "approver", "deployer", "admin")
#: role -> every role it includes (itself too).
_INCLUDES: dict[str, frozenset[str]] = {
    "reader": frozenset({"reader"}),
    "publisher": frozenset({"reader", "publisher"}),
    "approver": frozenset({"reader", "publisher", "approver"}),
    "deployer": frozenset({"reader", "publisher", "deployer"}),
    "admin": frozenset(ROLES),
}
ADMIN_TOKEN_NAME = "admin"
#: The actor of the admin token central issues at start.
BOOTSTRAP_ACTOR = "central"
SECRET_PREFIX = "mr_"
#: Most globs one token may be scoped to.
MAX_SCOPE_GLOBS = 100
#: Name of the page-token MAC key in the ``keys`` table of ``secrets.db``.
PAGE_TOKEN_KEY = "page_token"
#: Seconds between two writes of a token's ``last_used_at`` (it is informative, not exact).
LAST_USED_RESOLUTION_S = 60.0

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
_GLOB_RE = re.compile(r"[a-z0-9._*?\[\]!-]{1,128}")
_SECRET_RE = re.compile(SECRET_PREFIX + r"[A-Za-z0-9_-]{43}")

T = TypeVar("T")


#: Where the auth middleware of ``central/app.py`` leaves the request's authenticated
#: :class:`Token`; read it with :func:`request_token`. aiohttp 3.14 added typed request keys
#: (and warns about plain ones); older releases, down to the floor in ``pyproject.toml``, take
#: a string.
if TYPE_CHECKING or hasattr(web, "RequestKey"):
    TOKEN: web.RequestKey[Token] = web.RequestKey("token")
else:
    TOKEN = "modelreg.token"


def request_token(request: web.Request) -> Token:
    """The token the auth middleware authenticated for ``request``."""
    token: Token = request[TOKEN]
    return token


def role_includes(held: str, needed: str) -> bool:
    """Whether a token with role ``held`` may do what needs role ``needed``."""
    return needed in _INCLUDES.get(held, frozenset())


def new_secret() -> str:
    """A fresh token secret: ``mr_`` and 43 urlsafe characters (256 random bits)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """The stored form of a secret: its sha256, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Token:
    """One API token, as authentication sees it (never its secret or hash)."""

    name: str
    role: str
    #: Model-name globs; empty means every model.
    models: tuple[str, ...]
    created_by: str
    created_at: str
    last_used_at: str | None = None

    @property
    def scoped(self) -> bool:
        return bool(self.models)

    def has_role(self, needed: str) -> bool:
        return role_includes(self.role, needed)

    def covers(self, model: str) -> bool:
        """Whether ``model`` is inside this token's scope."""
        return not self.models or any(fnmatch.fnmatchcase(model, g) for g in self.models)

    def require(self, needed: str, model: str | None = None) -> None:
        """Raise :class:`PermissionDenied` unless this token has ``needed`` and covers ``model``."""
        if not self.has_role(needed):
            raise PermissionDenied(
                f"token {self.name!r} has role {self.role!r}; this needs {needed!r}",
                role=self.role,
                required=needed,
            )
        if model is not None and not self.covers(model):
            raise PermissionDenied(
                f"token {self.name!r} is not allowed on model {model!r}", model=model
            )

    def require_unscoped(self, what: str) -> None:
        """Raise :class:`PermissionDenied` if this token is scoped to some models only."""
        if self.scoped:
            raise PermissionDenied(f"{what} needs a token that is not scoped to models")

    def record(self) -> dict[str, Any]:
        """The token as the API lists it."""
        return {
            "name": self.name,
            "role": self.role,
            "models": list(self.models),
            "created_by": self.created_by,
            "created_at": self.created_at,
            "last_used_at": self.last_used_at,
        }


@dataclass(frozen=True)
class TokenChange:
    """The outcome of a token change: the token, its secret (creation only) and the registry
    revision of the change's event (``None`` when :class:`Auth` records to no log)."""

    token: Token
    revision: int | None
    secret: str | None = None
    #: The chain hash of ``revision``'s event (None without a log).
    revision_hash: str | None = None


class TokenLog(Protocol):
    """Where token changes are recorded: :meth:`modelreg.central.registry.Registry.record_token`."""

    async def record_token(
        self, actor: str, action: str, name: str, role: str, models: list[str]
    ) -> dict[str, Any]:
        """Append the change's event; the event with its ``revision``. Raises
        :class:`modelreg.errors.RegistryError` (then the change must not happen)."""
        ...


def _validate(name: Any, role: Any, models: Any) -> tuple[str, str, tuple[str, ...]]:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidName(
            f"invalid token name {name!r}: expected [a-z0-9][a-z0-9._-]{{0,127}}", field="name"
        )
    if name == BOOTSTRAP_ACTOR:
        raise InvalidName(
            f"the token name {name!r} is reserved: the event log names central itself so",
            field="name",
        )
    if role not in ROLES:
        raise InvalidField(
            f"invalid role {role!r}: expected one of {', '.join(ROLES)}", field="role"
        )
    if models is None:
        models = []
    if not isinstance(models, list) or len(models) > MAX_SCOPE_GLOBS:
        raise InvalidField(
            f"models must be a list of at most {MAX_SCOPE_GLOBS} model-name globs", field="models"
        )
    for glob in models:
        if not isinstance(glob, str) or not _GLOB_RE.fullmatch(glob):
            raise InvalidField(
                f"invalid model glob {glob!r}: 1-128 of a-z 0-9 . _ - * ? [ ] !", field="models"
            )
    return name, role, tuple(dict.fromkeys(models))


class Auth:
    """Token authentication and management over ``secrets.db``.

    Lifecycle: ``await open()`` / ``await close()``; no I/O in the constructor. All database work
    runs in a worker thread, one statement group at a time. Token changes are recorded to
    ``log`` when one is given (central passes its registry; open it before this).
    """

    def __init__(self, config: CentralConfig, log: TokenLog | None = None) -> None:
        self._config = config
        self._log = log
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        #: secret hash -> token; the whole (small) table, kept in step with the database.
        self._by_hash: dict[str, Token] = {}
        #: token name -> monotonic time its last_used_at was last written.
        self._touched: dict[str, float] = {}
        self._page_token_key: bytes | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Open (and migrate) ``secrets.db``, load the tokens, ensure the admin token exists.

        Raises ``sqlite3.Error`` / ``OSError`` when the data directory is unusable and
        :class:`modelreg.central.schema.SchemaTooNew` for a database from a newer release.
        """
        await asyncio.to_thread(self._open_sync)
        try:
            await self._ensure_admin()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the database. Safe to call twice."""
        async with self._lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await asyncio.to_thread(conn.close)

    def _open_sync(self) -> None:
        path = self._config.secrets_db
        path.parent.mkdir(parents=True, exist_ok=True)
        # Token hashes are for central's eyes only: the file (and so its -wal and -shm, which
        # SQLite creates with the database's mode) is the owner's alone, restored ones too.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            # The settings Litestream needs: it replicates this file too (to its own path).
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint=0")
            migrate(conn, SECRETS_MIGRATIONS)
            self._conn = conn
            self._load()
            self._page_token_key = _ensure_key(conn, PAGE_TOKEN_KEY)
        except BaseException:
            self._conn = None
            conn.close()
            raise

    @property
    def page_token_key(self) -> bytes:
        """The key that MACs page tokens (``central/pagetoken.py``), kept in ``secrets.db``."""
        if self._page_token_key is None:
            raise RuntimeError("Auth is not open")
        return self._page_token_key

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("Auth is not open")
        return self._conn

    def _load(self) -> None:
        rows = self._db().execute(
            "SELECT name, role, models, hash, created_by, created_at, last_used_at FROM tokens"
        )
        self._by_hash = {
            row[3]: Token(row[0], row[1], tuple(json.loads(row[2])), row[4], row[5], row[6])
            for row in rows
        }

    async def _ensure_admin(self) -> None:
        file = self._config.admin_token_file
        try:
            existing = (await asyncio.to_thread(file.read_text)).strip()
        except FileNotFoundError:
            existing = ""
        known = self._by_hash.get(hash_secret(existing)) if existing else None
        if known is not None and known.name == ADMIN_TOKEN_NAME and known.role == "admin":
            return
        secret = new_secret()
        token = Token(ADMIN_TOKEN_NAME, "admin", (), BOOTSTRAP_ACTOR, now())

        def replace(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM tokens WHERE name = ?", (ADMIN_TOKEN_NAME,))
            _insert(conn, token, secret)
            _write_private(file, secret + "\n")

        await self._change(replace, "token.create", BOOTSTRAP_ACTOR, token)
        if existing or any(t.name == ADMIN_TOKEN_NAME for t in self._by_hash.values()):
            log.warning("admin token file %s was missing or stale: issued a new admin token", file)
        await asyncio.to_thread(self._load)

    async def _change(
        self, fn: Callable[[sqlite3.Connection], T], action: str, actor: str, token: Token
    ) -> tuple[T, tuple[int, str] | None]:
        """Run ``fn`` in a ``secrets.db`` transaction that commits only once the change's event
        is in the registry log (:func:`commit_with_event`). Returns ``fn``'s result and the
        event's ``(revision, hash)`` (None without a log).
        """
        log = self._log
        record = (
            None
            if log is None
            else lambda: log.record_token(actor, action, token.name, token.role, list(token.models))
        )
        async with self._lock:
            result, event = await commit_with_event(self._db(), fn, record)
        if event is None:
            return result, None
        return result, (int(event["revision"]), str(event["hash"]))

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        async with self._lock:
            conn = self._db()
            return await asyncio.to_thread(fn, conn)

    # -- authentication ----------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> Token:
        """The token of an ``Authorization: Bearer <secret>`` header value.

        Raises :class:`Unauthenticated` when the header is missing, malformed, or names no
        token. Never touches the disk (see :meth:`touch`).
        """
        if not authorization:
            raise Unauthenticated("missing Authorization: Bearer <token> header")
        scheme, _, secret = authorization.strip().partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
        token = self._by_hash.get(hash_secret(secret)) if _SECRET_RE.fullmatch(secret) else None
        if token is None:
            raise Unauthenticated("invalid or revoked token")
        return token

    async def touch(self, token: Token) -> None:
        """Record that ``token`` was used, at most once per minute per token. Never raises for a
        database error (it is logged): ``last_used_at`` is informative."""
        moment = time.monotonic()
        last = self._touched.get(token.name)
        if last is not None and moment - last < LAST_USED_RESOLUTION_S:
            return
        self._touched[token.name] = moment
        at = now()

        def update(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE tokens SET last_used_at = ? WHERE name = ?", (at, token.name))

        try:
            await self._run(update)
        except sqlite3.Error as exc:  # informative only: never fail a request over it
            log.warning("could not record last use of token %r: %s", token.name, exc)

    # -- management --------------------------------------------------------------------------

    async def create(self, actor: str, name: Any, role: Any, models: Any = None) -> TokenChange:
        """Create a token; the change with its secret (the only time the secret is available).

        Raises :class:`InvalidName`, :class:`InvalidField` (role, models),
        :class:`AlreadyExists` when a token of that name exists, and whatever the token log
        raises (then no token was created).
        """
        name, role, globs = _validate(name, role, models)
        secret = new_secret()
        token = Token(name, role, globs, actor, now())

        def insert(conn: sqlite3.Connection) -> None:
            try:
                _insert(conn, token, secret)
            except sqlite3.IntegrityError:
                raise AlreadyExists(f"token {name!r} already exists", token=name) from None

        _, position = await self._change(insert, "token.create", actor, token)
        self._by_hash[hash_secret(secret)] = token
        log.info("token %r (role %s, models %s) created by %r", name, role, list(globs), actor)
        revision, revision_hash = _position(position)
        return TokenChange(token, revision, secret, revision_hash)

    async def tokens(self) -> list[Token]:
        """Every token, by name, with ``last_used_at`` as last recorded."""

        def select(conn: sqlite3.Connection) -> list[Token]:
            rows = conn.execute(
                "SELECT name, role, models, created_by, created_at, last_used_at"
                " FROM tokens ORDER BY name"
            )
            return [Token(r[0], r[1], tuple(json.loads(r[2])), r[3], r[4], r[5]) for r in rows]

        return await self._run(select)

    async def revoke(self, actor: Token, name: str) -> TokenChange:
        """Delete the token ``name``; it stops working at once.

        Raises :class:`TokenNotFound`, :class:`PermissionDenied` when ``actor`` tries to
        revoke itself (an admin could lock everyone out), and whatever the token log raises
        (then the token stays).
        """
        if name == actor.name:
            raise PermissionDenied("a token cannot revoke itself", token=name)
        token = next((t for t in self._by_hash.values() if t.name == name), None)
        if token is None:
            raise TokenNotFound(f"no token named {name!r}", token=name)

        def delete(conn: sqlite3.Connection) -> str:
            row = conn.execute("SELECT hash FROM tokens WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise TokenNotFound(f"no token named {name!r}", token=name)
            conn.execute("DELETE FROM tokens WHERE name = ?", (name,))
            return str(row[0])

        digest, position = await self._change(delete, "token.revoke", actor.name, token)
        revoked = self._by_hash.pop(digest, token)
        self._touched.pop(name, None)
        log.info("token %r revoked by %r", name, actor.name)
        revision, revision_hash = _position(position)
        return TokenChange(revoked, revision, revision_hash=revision_hash)


def _position(position: tuple[int, str] | None) -> tuple[int | None, str | None]:
    return (None, None) if position is None else position


def _insert(conn: sqlite3.Connection, token: Token, secret: str) -> None:
    conn.execute(
        "INSERT INTO tokens (name, role, models, hash, created_by, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (
            token.name,
            token.role,
            json.dumps(list(token.models)),
            hash_secret(secret),
            token.created_by,
            token.created_at,
        ),
    )


def _ensure_key(conn: sqlite3.Connection, name: str) -> bytes:
    """The key ``name`` of the ``keys`` table, made (random, :data:`KEY_BYTES`) if missing."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("SELECT value FROM keys WHERE name = ?", (name,)).fetchone()
        if row is None:
            value = secrets.token_bytes(KEY_BYTES)
            conn.execute(
                "INSERT INTO keys (name, value, created_at) VALUES (?, ?, ?)", (name, value, now())
            )
        else:
            value = bytes(row[0])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return value


def _begin_and_run(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """``BEGIN IMMEDIATE`` then ``fn(conn)``; on any error roll back and raise it."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        return fn(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise


async def _finish(conn: sqlite3.Connection, *, commit: bool) -> None:
    """COMMIT or ROLLBACK the open transaction; not abandoned half-way by a cancellation."""
    await asyncio.shield(asyncio.to_thread(conn.execute, "COMMIT" if commit else "ROLLBACK"))


async def commit_with_event(
    conn: sqlite3.Connection,
    fn: Callable[[sqlite3.Connection], T],
    record: Callable[[], Awaitable[dict[str, Any]]] | None,
    then: Callable[[sqlite3.Connection, dict[str, Any]], None] | None = None,
) -> tuple[T, dict[str, Any] | None]:
    """Run ``fn`` in a ``secrets.db`` transaction on ``conn`` that commits only once
    ``record()`` has written the change's event to the registry log; ``then(conn, event)``
    runs in the same transaction before the commit. Whatever ``fn``, ``record`` or ``then``
    raises rolls the transaction back and is raised. ``fn``'s result and the event (None when
    ``record`` is None). The caller serialises calls on one connection.
    """
    begun = asyncio.ensure_future(asyncio.to_thread(_begin_and_run, conn, fn))
    try:
        result = await asyncio.shield(begun)
    except asyncio.CancelledError:  # never leave a transaction open behind the caller's lock
        await asyncio.wait([begun])
        if not begun.cancelled() and begun.exception() is None:
            await _finish(conn, commit=False)
        raise
    if record is None:
        await _finish(conn, commit=True)
        return result, None
    # Shielded: once the event is being written, cancellation must not split the pair.
    event = asyncio.ensure_future(record())
    try:
        await asyncio.shield(event)
    except asyncio.CancelledError:
        await asyncio.wait([event])
        written = not event.cancelled() and event.exception() is None
        if written and then is not None:
            await asyncio.shield(asyncio.to_thread(then, conn, event.result()))
        await _finish(conn, commit=written)
        raise
    except BaseException:
        await _finish(conn, commit=False)
        raise
    if then is not None:
        try:
            await asyncio.shield(asyncio.to_thread(then, conn, event.result()))
        except BaseException:
            # the event is written: keep the change it describes
            await _finish(conn, commit=True)
            raise
    await _finish(conn, commit=True)
    return result, event.result()


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by the owner only (0600)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
