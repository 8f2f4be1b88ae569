"""The event feed: committed events as the long-poll, the SSE stream and webhooks read them.

The hash-chained event log in ``registry.db`` is the outbox. Nothing is copied out of it to be
delivered later: every reader (a long-poll, a stream, a webhook subscription) holds a position
in the log, a revision, and asks the feed for what follows it. So a reader that falls behind
costs one integer, not a queue, and nothing committed can be lost between the log and a
reader: after a crash a reader resumes from the last position it recorded.

:class:`EventFeed` keeps the last :data:`RING_EVENTS` committed events in memory, handed over by
the store right after each commit (``Store.add_listener``), so readers that keep up never touch
the database; a reader further behind reads the log in chunks on the store's read-only
connections. :meth:`EventFeed.wait` wakes every waiter at the next commit.

Filters (:class:`EventFilter`): action globs (``version.*``), model-name globs, and a token's
scope. An event's model comes from its subject (:func:`event_model`); token and webhook events
belong to no model, so a scoped token never sees them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import re
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelreg.central.audit import event_record
from modelreg.central.records import canonical_json
from modelreg.central.store import Store
from modelreg.errors import InvalidField

__all__ = [
    "ACTIONS",
    "MAX_SCAN",
    "RING_EVENTS",
    "Batch",
    "EventFeed",
    "EventFilter",
    "FeedEvent",
    "action_globs",
    "event_model",
    "model_globs",
]

#: Every action the event log holds (docs/API.md, "Event").
ACTIONS = (
    "model.create",
    "model.update",
    "version.register",
    "version.update",
    "version.approve",
    "version.reject",
    "version.archive",
    "alias.set",
    "alias.delete",
    "alias.rollback",
    "token.create",
    "token.revoke",
    "webhook.create",
    "webhook.update",
    "webhook.delete",
    "webhook.disable",
)
#: Committed events kept in memory for readers that keep up.
RING_EVENTS = 2048
#: Most log rows one :meth:`EventFeed.read` examines (a filter that matches rarely must not
#: turn one request into a scan of the whole log).
MAX_SCAN = 10_000
#: Rows per read of the log.
CHUNK_ROWS = 500
#: Most globs one filter may list.
MAX_GLOBS = 100

_GLOB_RE = re.compile(r"[a-z0-9._*?\[\]!-]{1,128}")
_GLOB_CHARS = frozenset("*?[")


def event_model(action: str, subject: str) -> str | None:
    """The model an event is about: the subject of ``model.*``, the part before ``/`` of
    ``version.*`` (``fraud/3``) and before ``@`` of ``alias.*`` (``fraud@production``); None
    for token and webhook events."""
    kind = action.partition(".")[0]
    if kind == "model":
        return subject
    if kind == "version":
        return subject.partition("/")[0]
    if kind == "alias":
        return subject.partition("@")[0]
    return None


def _globs(values: Any, field_name: str) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list | tuple) or len(values) > MAX_GLOBS:
        raise InvalidField(
            f"{field_name} must be a list of at most {MAX_GLOBS} globs", field=field_name
        )
    for value in values:
        if not isinstance(value, str) or not _GLOB_RE.fullmatch(value):
            raise InvalidField(
                f"invalid {field_name} glob {str(value)[:100]!r}: 1-128 of a-z 0-9 . _ - * ? [ ] !",
                field=field_name,
            )
    return tuple(dict.fromkeys(values))


def action_globs(values: Any, field_name: str = "events") -> tuple[str, ...]:
    """Validated action globs. A name without ``*``, ``?`` or ``[`` must be an action of
    :data:`ACTIONS`, and a glob must match one: a typo would otherwise match nothing, silently.

    Raises :class:`InvalidField` naming ``field_name``.
    """
    globs = _globs(values, field_name)
    for glob in globs:
        if not any(fnmatch.fnmatchcase(action, glob) for action in ACTIONS):
            known = ", ".join(ACTIONS)
            raise InvalidField(
                f"{field_name}: {glob!r} matches no action (actions: {known})", field=field_name
            )
    return globs


def model_globs(values: Any, field_name: str = "models") -> tuple[str, ...]:
    """Validated model-name globs. Raises :class:`InvalidField` naming ``field_name``."""
    return _globs(values, field_name)


def _matcher(globs: Sequence[str]) -> Callable[[str], bool] | None:
    """One compiled regular expression for ``globs`` (None: everything matches)."""
    if not globs:
        return None
    if not any(_GLOB_CHARS & set(glob) for glob in globs):
        names = frozenset(globs)
        return names.__contains__
    pattern = re.compile("|".join(f"(?:{fnmatch.translate(glob)})" for glob in globs))
    return lambda text: pattern.match(text) is not None


@dataclass(frozen=True)
class EventFilter:
    """Which events a reader gets: every event whose action matches one of ``actions`` and
    whose model matches one of ``models``, within ``scope`` (a token's model globs). An empty
    tuple does not filter; a non-empty ``models`` or ``scope`` leaves out events that belong to
    no model."""

    actions: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    scope: tuple[str, ...] = ()
    _action: Callable[[str], bool] | None = field(init=False, repr=False, compare=False)
    _model: Callable[[str], bool] | None = field(init=False, repr=False, compare=False)
    _scope: Callable[[str], bool] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_action", _matcher(self.actions))
        object.__setattr__(self, "_model", _matcher(self.models))
        object.__setattr__(self, "_scope", _matcher(self.scope))

    def matches(self, event: FeedEvent) -> bool:
        if self._action is not None and not self._action(event.action):
            return False
        for check in (self._model, self._scope):
            if check is not None and (event.model is None or not check(event.model)):
                return False
        return True


#: Matches everything.
EVERYTHING = EventFilter()


class FeedEvent:
    """One committed event: its record (the API's event dict), and its encodings, made once
    however many readers send it."""

    __slots__ = ("_json", "_payload", "action", "model", "record", "revision")

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record
        self.revision: int = record["revision"]
        self.action: str = record["action"]
        self.model = event_model(self.action, record["subject"])
        self._json: bytes | None = None
        self._payload: bytes | None = None

    @classmethod
    def committed(cls, event: dict[str, Any]) -> FeedEvent:
        """From the store's event dict: ``details`` as a reader of the log would parse it back
        (the log keeps canonical JSON: sorted keys), so both paths answer the same bytes."""
        return cls({**event, "details": json.loads(canonical_json(event["details"]))})

    @property
    def json(self) -> bytes:
        """The record as compact JSON."""
        if self._json is None:
            self._json = _dumps(self.record)
        return self._json

    @property
    def payload(self) -> bytes:
        """The webhook body, in the Standard Webhooks shape: ``{"type", "timestamp", "data"}``."""
        if self._payload is None:
            head = _dumps({"type": self.action, "timestamp": self.record["at"]})
            self._payload = head[:-1] + b',"data":' + self.json + b"}"
        return self._payload


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Batch:
    """What one read found: the matching events (revision order), the last revision examined
    (resume after it: non-matching events are skipped for good) and whether more may follow
    right away (``limit`` or :data:`MAX_SCAN` cut the read short before the head)."""

    items: list[FeedEvent]
    last: int
    more: bool


class EventFeed:
    """The committed events of one store, for readers that each hold a revision.

    Construct it before the store commits anything; it registers itself as the store's
    listener. No I/O in the constructor; :meth:`close` wakes every waiter for good.
    """

    def __init__(self, store: Store, capacity: int = RING_EVENTS) -> None:
        self._store = store
        self._ring: deque[FeedEvent] = deque(maxlen=capacity)
        self._published: int | None = None
        self._signal: asyncio.Future[None] | None = None
        self._closed = False
        store.add_listener(self.publish)

    @property
    def head(self) -> int:
        """The revision of the last event readers can see."""
        return self._store.revision if self._published is None else self._published

    @property
    def closed(self) -> bool:
        return self._closed

    def publish(self, events: list[dict[str, Any]]) -> None:
        """The store's listener: add committed events (in revision order) and wake waiters."""
        for event in events:
            item = FeedEvent.committed(event)
            if self._ring and item.revision != self._ring[-1].revision + 1:
                self._ring.clear()  # never serve a gap from memory: older reads use the log
            self._ring.append(item)
            self._published = item.revision
        self._wake()

    def close(self) -> None:
        """Wake every waiter; :meth:`wait` returns at once from now on."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        signal, self._signal = self._signal, None
        if signal is not None and not signal.done():
            signal.set_result(None)

    async def wait(self, after: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for an event after revision ``after``; whether there
        is one (False also when the feed closed)."""
        if self.head > after:
            return True
        if self._closed or timeout <= 0:
            return False
        if self._signal is None:
            self._signal = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._signal), timeout)
        return self.head > after

    async def read(
        self, after: int, limit: int, flt: EventFilter = EVERYTHING, scan: int = MAX_SCAN
    ) -> Batch:
        """Up to ``limit`` events after revision ``after`` that ``flt`` matches, examining at
        most ``scan`` events. ``more`` is set only when another matching event follows, or when
        ``scan`` stopped the read before the head: a reader is never sent on to an empty page
        just because events it may not see follow. Raises :class:`modelreg.errors.Unavailable`
        when the log cannot be read."""
        head = self.head
        items: list[FeedEvent] = []
        last = after
        while last < head and len(items) <= limit and last - after < scan:
            chunk = self._from_ring(last)
            if chunk is None:
                chunk = await self._from_log(last, head, min(CHUNK_ROWS, scan - (last - after)))
            if not chunk:  # rows missing from the log (cannot happen short of tampering)
                last = head
                break
            for event in chunk:
                if last - after >= scan:
                    break
                if flt.matches(event):
                    items.append(event)
                    if len(items) > limit:
                        break
                last = event.revision
        if len(items) > limit:  # one more matches: stop right after the last one answered
            del items[limit:]
            return Batch(items, items[-1].revision, True)
        return Batch(items, last, last < head)

    def _from_ring(self, after: int) -> Iterable[FeedEvent] | None:
        ring = self._ring
        if not ring or after < ring[0].revision - 1 or after >= ring[-1].revision:
            return None
        start = after - ring[0].revision + 1
        return [ring[i] for i in range(start, len(ring))]

    async def _from_log(self, after: int, head: int, rows: int) -> list[FeedEvent]:
        def select(conn: sqlite3.Connection) -> list[FeedEvent]:
            found = conn.execute(
                "SELECT revision, at, actor, action, subject, details, prev_hash, hash"
                " FROM events WHERE revision > ? AND revision <= ? ORDER BY revision LIMIT ?",
                (after, head, max(1, rows)),
            ).fetchall()
            return [FeedEvent(event_record(row)) for row in found]

        return await self._store.read(select)

    async def get(self, revision: int) -> FeedEvent | None:
        """The event of ``revision``, or None. Raises :class:`modelreg.errors.Unavailable`."""
        batch = await self.read(revision - 1, 1, scan=1) if revision >= 1 else None
        if batch is None or not batch.items or batch.items[0].revision != revision:
            return None
        return batch.items[0]
