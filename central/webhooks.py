"""Webhook subscriptions: what to send where, and the secret that signs it.

A subscription is ``{url, events (action globs), models (model-name globs), description}`` plus
its signing secret (``whsec_…``, ``central/signature.py``). They live in ``secrets.db``, table
``webhooks`` (:data:`modelreg.central.schema.SECRETS_MIGRATIONS`), never in the replicated
``registry.db``: the secret must stay on central, and so must the URL, since the URL of many
receivers (chat webhooks, CI triggers) is itself a credential. ``secrets.db`` is replicated to
its own path, so a replacement host keeps its subscriptions.

Every change is an event in the hash-chained log, written by :class:`WebhookLog` (the registry)
before the ``secrets.db`` change commits, exactly as token changes are
(:func:`modelreg.central.auth.commit_with_event`): ``webhook.create``, ``webhook.update``,
``webhook.delete`` by the admin token that made them, ``webhook.disable`` by ``central`` when
deliveries kept failing. Subject: the subscription's id; details: the URL's origin
(``https://hooks.example.com``), the filters, the description, whether it is enabled, and for
an update which fields changed (``secret`` when the secret was rotated: never the secret).

:class:`Subscriptions` keeps every subscription in memory (there are at most
:data:`MAX_WEBHOOKS`) and tells its listener (the dispatcher of ``central/delivery.py``) about
each change.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import os
import re
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from modelreg.central import validate as v
from modelreg.central.auth import commit_with_event
from modelreg.central.config import CentralConfig
from modelreg.central.feed import EventFilter, action_globs, model_globs
from modelreg.central.records import TIME_FORMAT, now
from modelreg.central.schema import SECRETS_MIGRATIONS, migrate
from modelreg.central.signature import new_secret
from modelreg.central.targets import check_target, origin
from modelreg.errors import Conflict, InvalidField, WebhookNotFound

__all__ = [
    "CENTRAL_ACTOR",
    "MAX_DESCRIPTION_LEN",
    "MAX_WEBHOOKS",
    "ROTATION_OVERLAP_S",
    "Subscription",
    "Subscriptions",
    "WebhookChange",
    "WebhookLog",
    "valid_id",
]

log = logging.getLogger(__name__)

#: Most subscriptions one central holds.
MAX_WEBHOOKS = 100
MAX_DESCRIPTION_LEN = 1000
#: Seconds a rotated secret's predecessor keeps signing beside the new one.
ROTATION_OVERLAP_S = 24 * 3600.0
#: The actor of changes central makes by itself (disabling a failing subscription).
CENTRAL_ACTOR = "central"

_ID_RE = re.compile(r"wh_[0-9a-f]{16}")
_COLUMNS = (
    "id, url, secret, previous_secret, previous_until, events, models, description, enabled,"
    " disabled_reason, created_by, created_at, updated_at, checkpoint"
)


def valid_id(value: str) -> str:
    """``value`` if it looks like a subscription id, else :class:`WebhookNotFound`."""
    if not _ID_RE.fullmatch(value):
        raise WebhookNotFound(f"no webhook {value[:40]!r}", webhook=value[:40])
    return value


@dataclass(frozen=True)
class Subscription:
    """One subscription as central holds it (the secrets included: never answer it as is)."""

    id: str
    url: str
    secret: str
    previous_secret: str | None
    previous_until: str | None
    events: tuple[str, ...]
    models: tuple[str, ...]
    description: str
    enabled: bool
    disabled_reason: str | None
    created_by: str
    created_at: str
    updated_at: str
    #: A revision every event up to which was handled (a coarse copy; deliveries.db is exact).
    checkpoint: int

    @functools.cached_property
    def filter(self) -> EventFilter:
        """Compiled once per subscription object (a change makes a new object)."""
        return EventFilter(actions=self.events, models=self.models)

    def signing_secrets(self, moment: str | None = None) -> list[str]:
        """The secrets that sign a delivery now: the current one, and its predecessor until
        its overlap ends."""
        moment = moment or now()
        out = [self.secret]
        if self.previous_secret and self.previous_until and moment < self.previous_until:
            out.append(self.previous_secret)
        return out

    def record(self) -> dict[str, Any]:
        """The subscription as the API shows it: never a secret."""
        return {
            "id": self.id,
            "url": self.url,
            "events": list(self.events),
            "models": list(self.models),
            "description": self.description,
            "enabled": self.enabled,
            "disabled_reason": self.disabled_reason,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }

    def event_details(self) -> dict[str, Any]:
        """What the event log says about it: the URL's origin only, never a secret."""
        return {
            "url": origin(self.url),
            "events": list(self.events),
            "models": list(self.models),
            "description": self.description,
            "enabled": self.enabled,
        }


def _row(row: tuple[Any, ...]) -> Subscription:
    return Subscription(
        id=row[0],
        url=row[1],
        secret=row[2],
        previous_secret=row[3],
        previous_until=row[4],
        events=tuple(json.loads(row[5])),
        models=tuple(json.loads(row[6])),
        description=row[7],
        enabled=bool(row[8]),
        disabled_reason=row[9],
        created_by=row[10],
        created_at=row[11],
        updated_at=row[12],
        checkpoint=int(row[13]),
    )


@dataclass(frozen=True)
class WebhookChange:
    """The outcome of a subscription change: the subscription, the revision and chain hash of
    the change's event, and the secret (creation and rotation only)."""

    subscription: Subscription
    revision: int
    revision_hash: str
    secret: str | None = None

    def record(self) -> dict[str, Any]:
        """The answer's fields beside the subscription: revision, hash, the secret if any."""
        out: dict[str, Any] = {"revision": self.revision, "revision_hash": self.revision_hash}
        if self.secret is not None:
            out["secret"] = self.secret
        return out


class WebhookLog(Protocol):
    """Where subscription changes are recorded: the registry's event log
    (:meth:`modelreg.central.registry.Registry.record_webhook`)."""

    async def record_webhook(
        self, actor: str, action: str, webhook: str, details: dict[str, Any]
    ) -> dict[str, Any]:
        """Append the change's event; the event. Raises
        :class:`modelreg.errors.RegistryError` (then the change must not happen)."""
        ...

    async def revision(self) -> int:
        """The registry's current revision."""
        ...


Listener = Callable[[Subscription | None, str], None]


class Subscriptions:
    """The webhook subscriptions in ``secrets.db``, and their changes' events.

    Lifecycle: ``await open()`` / ``await close()``; no I/O in the constructor. ``log`` records
    each change's event (central passes its registry); ``listener(subscription, id)`` hears of
    every change (``subscription`` None: deleted).
    """

    def __init__(self, config: CentralConfig, log: WebhookLog) -> None:
        self._config = config
        self._log = log
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()
        self._by_id: dict[str, Subscription] = {}
        self._listeners: list[Listener] = []

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Open (and migrate) ``secrets.db`` and load the subscriptions.

        Raises ``sqlite3.Error`` / ``OSError`` and
        :class:`modelreg.central.schema.SchemaTooNew`.
        """
        await asyncio.to_thread(self._open_sync)

    def _open_sync(self) -> None:
        path = self._config.secrets_db
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA synchronous=NORMAL")
            # Replicated, only litestream checkpoints (as for registry.db: central/store.py).
            pages = 0 if self._config.replica_url is not None else 1000
            conn.execute(f"PRAGMA wal_autocheckpoint={pages}")
            migrate(conn, SECRETS_MIGRATIONS)
            rows = conn.execute(f"SELECT {_COLUMNS} FROM webhooks").fetchall()
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._by_id = {row[0]: _row(row) for row in rows}

    async def close(self) -> None:
        """Close the database. Safe to call twice."""
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await asyncio.to_thread(conn.close)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("Subscriptions is not open")
        return self._conn

    def _changed(self, sub: Subscription | None, webhook: str) -> None:
        if sub is None:
            self._by_id.pop(webhook, None)
        else:
            self._by_id[webhook] = sub
        for listener in self._listeners:
            try:
                listener(sub, webhook)
            except Exception:
                log.exception("webhook listener failed")

    # -- reading -----------------------------------------------------------------------------

    def all(self) -> list[Subscription]:
        """Every subscription, oldest first."""
        return sorted(self._by_id.values(), key=lambda s: (s.created_at, s.id))

    def get(self, webhook: str) -> Subscription:
        """Raises :class:`WebhookNotFound`."""
        sub = self._by_id.get(valid_id(webhook))
        if sub is None:
            raise WebhookNotFound(f"no webhook {webhook!r}", webhook=webhook)
        return sub

    # -- changes -----------------------------------------------------------------------------

    async def _commit(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        actor: str,
        action: str,
        sub: Subscription,
        details: dict[str, Any],
        then: Callable[[sqlite3.Connection, dict[str, Any]], None] | None = None,
    ) -> tuple[int, str]:
        async def record() -> dict[str, Any]:
            return await self._log.record_webhook(actor, action, sub.id, details)

        async with self._lock:
            _, event = await commit_with_event(self._db(), fn, record, then)
        assert event is not None
        return int(event["revision"]), str(event["hash"])

    async def create(
        self,
        actor: str,
        url: Any,
        events: Any = None,
        models: Any = None,
        description: Any = "",
    ) -> WebhookChange:
        """A new subscription, with its secret and the revision of its event. It gets the
        events committed after its own ``webhook.create``.

        Raises :class:`InvalidField`, :class:`modelreg.errors.TargetRefused` (the URL),
        :class:`Conflict` past :data:`MAX_WEBHOOKS`, and whatever the event log raises (then
        nothing was created).
        """
        checked = await check_target(url, self._config.webhook_allow_private)
        globs = action_globs(["*"] if events is None else events)
        if not globs:
            raise InvalidField("events must list at least one action or glob", field="events")
        at = now()
        sub = Subscription(
            id="wh_" + secrets.token_hex(8),
            url=checked,
            secret=new_secret(),
            previous_secret=None,
            previous_until=None,
            events=globs,
            models=model_globs(models),
            description=v.text(description or "", "description", MAX_DESCRIPTION_LEN),
            enabled=True,
            disabled_reason=None,
            created_by=actor,
            created_at=at,
            updated_at=at,
            checkpoint=await self._log.revision(),
        )
        if len(self._by_id) >= MAX_WEBHOOKS:
            raise Conflict(f"at most {MAX_WEBHOOKS} webhooks; delete one first")

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO webhooks ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                _values(sub),
            )

        created: dict[str, Subscription] = {}

        def start_after_own_event(conn: sqlite3.Connection, event: dict[str, Any]) -> None:
            revision = int(event["revision"])
            conn.execute("UPDATE webhooks SET checkpoint = ? WHERE id = ?", (revision, sub.id))
            created["sub"] = dataclasses.replace(sub, checkpoint=revision)

        revision = await self._commit(
            insert, actor, "webhook.create", sub, sub.event_details(), start_after_own_event
        )
        final = created.get("sub", sub)
        self._changed(final, sub.id)
        log.info("webhook %s to %s created by %r", sub.id, origin(sub.url), actor)
        return WebhookChange(final, *revision, secret=sub.secret)

    async def update(self, actor: str, webhook: str, changes: dict[str, Any]) -> WebhookChange:
        """Change ``url``, ``events``, ``models``, ``description`` or ``enabled``, or rotate the
        secret (``rotate_secret: true``: the old one keeps signing beside the new one for
        :data:`ROTATION_OVERLAP_S`; the change then carries the new secret).

        Raises :class:`WebhookNotFound`, :class:`InvalidField`, ``TargetRefused`` and whatever
        the event log raises (then nothing changed).
        """
        old = self.get(webhook)
        fields: dict[str, Any] = {}
        if "url" in changes:
            fields["url"] = await check_target(changes["url"], self._config.webhook_allow_private)
        if "events" in changes:
            fields["events"] = action_globs(changes["events"])
            if not fields["events"]:
                raise InvalidField("events must list at least one action or glob", field="events")
        if "models" in changes:
            fields["models"] = model_globs(changes["models"])
        if "description" in changes:
            fields["description"] = v.text(
                changes["description"], "description", MAX_DESCRIPTION_LEN
            )
        if "enabled" in changes:
            if not isinstance(changes["enabled"], bool):
                raise InvalidField("enabled must be true or false", field="enabled")
            fields["enabled"] = changes["enabled"]
            if changes["enabled"]:
                fields["disabled_reason"] = None
            elif old.enabled:
                fields["disabled_reason"] = f"disabled by {actor}"
        secret = None
        at = now()
        if changes.get("rotate_secret"):
            secret = new_secret()
            until = datetime.now(UTC) + timedelta(seconds=ROTATION_OVERLAP_S)
            fields.update(
                secret=secret,
                previous_secret=old.secret,
                previous_until=until.strftime(TIME_FORMAT),
            )
        sub = dataclasses.replace(old, updated_at=at, **fields)
        changed = sorted(
            "secret" if name.startswith("previous") else name
            for name in fields
            if name != "disabled_reason" and getattr(old, name) != getattr(sub, name)
        )
        details = {**sub.event_details(), "changed": sorted(set(changed))}

        def write(conn: sqlite3.Connection) -> None:
            row = _values(sub)
            conn.execute(
                "UPDATE webhooks SET url=?, secret=?, previous_secret=?, previous_until=?,"
                " events=?, models=?, description=?, enabled=?, disabled_reason=?,"
                " updated_at=? WHERE id=?",
                (*row[1:10], sub.updated_at, sub.id),
            )

        revision = await self._commit(write, actor, "webhook.update", sub, details)
        self._changed(sub, sub.id)
        log.info("webhook %s updated by %r: %s", sub.id, actor, ", ".join(changed) or "nothing")
        return WebhookChange(sub, *revision, secret=secret)

    async def delete(self, actor: str, webhook: str) -> WebhookChange:
        """Delete a subscription; the change holds the deleted one. Raises
        :class:`WebhookNotFound` and whatever the event log raises."""
        sub = self.get(webhook)

        def remove(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM webhooks WHERE id = ?", (sub.id,))

        revision = await self._commit(remove, actor, "webhook.delete", sub, sub.event_details())
        self._changed(None, sub.id)
        log.info("webhook %s deleted by %r", sub.id, actor)
        return WebhookChange(sub, *revision)

    async def disable(self, webhook: str, reason: str) -> int | None:
        """Disable a subscription because delivering to it failed (``webhook.disable`` by
        ``central``, with ``reason``); the event's revision, None when it is gone or already
        disabled. Raises whatever the event log raises."""
        old = self._by_id.get(webhook)
        if old is None or not old.enabled:
            return None
        sub = dataclasses.replace(old, enabled=False, disabled_reason=reason, updated_at=now())

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE webhooks SET enabled = 0, disabled_reason = ?, updated_at = ? WHERE id = ?",
                (reason, sub.updated_at, sub.id),
            )

        details = {**sub.event_details(), "reason": reason}
        revision, _ = await self._commit(write, CENTRAL_ACTOR, "webhook.disable", sub, details)
        self._changed(sub, sub.id)
        log.warning("webhook %s to %s disabled: %s", sub.id, origin(sub.url), reason)
        return revision

    async def checkpoint(self, positions: dict[str, int]) -> None:
        """Record coarse delivery positions (not events: informative for a failover). Raises
        ``sqlite3.Error``."""
        rows = [
            (revision, webhook)
            for webhook, revision in positions.items()
            if webhook in self._by_id and revision > self._by_id[webhook].checkpoint
        ]
        if not rows:
            return

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("UPDATE webhooks SET checkpoint = ? WHERE id = ?", rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        async with self._lock:
            await asyncio.to_thread(write, self._db())
        for revision, webhook in rows:
            sub = self._by_id.get(webhook)
            if sub is not None:
                self._by_id[webhook] = dataclasses.replace(sub, checkpoint=revision)


def _values(sub: Subscription) -> tuple[Any, ...]:
    return (
        sub.id,
        sub.url,
        sub.secret,
        sub.previous_secret,
        sub.previous_until,
        json.dumps(list(sub.events)),
        json.dumps(list(sub.models)),
        sub.description,
        int(sub.enabled),
        sub.disabled_reason,
        sub.created_by,
        sub.created_at,
        sub.updated_at,
        sub.checkpoint,
    )
