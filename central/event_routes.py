"""The event log over HTTP: ``GET /v1/events`` (a page, or a long-poll with ``wait``) and
``GET /v1/events/stream`` (server-sent events).

Both read the feed of ``central/feed.py`` and take the same filters, ``model`` and ``action``
(repeatable globs), within the token's scope: a token scoped to ``fraud-*`` sees only the
events of those models, and never a token or webhook event (they belong to no model).

Long-poll: answers as soon as a matching event after ``after`` exists, or with no items once
``wait`` seconds (at most :data:`MAX_WAIT_S`) passed. ``last_revision`` is where the answer
stopped looking (non-matching events included): the next request passes it as ``after``.

Stream: ``id:`` is the event's revision and ``data:`` the event as JSON; a reconnecting client
sends ``Last-Event-ID`` and gets what followed, without a gap or a repeat. Every
:data:`KEEPALIVE_S` seconds of silence a comment line keeps proxies from closing the stream;
when the filter skipped events meanwhile it carries an ``id:`` line too (no ``data``, so no event
fires), so a reconnect does not look at them again. The stream opens with such a line too,
naming where it starts. A stream ends when central stops, when its
token is revoked, or when the client reads too slowly (a write waits at most
:data:`WRITE_TIMEOUT_S`).
"""

from __future__ import annotations

import asyncio
import json
import re

from aiohttp import web

from modelreg.central.api import _MAX_INT, _NUMBER_RE, _limit, _query
from modelreg.central.appkeys import AUTH, FEED, REGISTRY
from modelreg.central.auth import Token, request_token
from modelreg.central.feed import Batch, EventFilter, action_globs, model_globs
from modelreg.central.pagetoken import PageTokens
from modelreg.errors import InvalidField, RegistryError, Unavailable

__all__ = ["KEEPALIVE_S", "MAX_STREAMS", "MAX_WAIT_S", "add_routes"]

#: Longest long-poll, in seconds.
MAX_WAIT_S = 60.0
#: Seconds of silence after which a stream sends a keep-alive comment.
KEEPALIVE_S = 15.0
#: Seconds one write to a stream may wait for a slow client before the stream is closed.
WRITE_TIMEOUT_S = 30.0
#: Most streams and waiting long-polls one central serves at once.
MAX_STREAMS = 1000
#: Events per SSE write.
STREAM_BATCH = 100
#: What the client should wait before reconnecting, in milliseconds (the ``retry:`` field).
RECONNECT_MS = 2000

_WAIT_RE = re.compile(r"[0-9]{1,2}(\.[0-9]{1,3})?")


def _revision(raw: str, name: str) -> int:
    if not _NUMBER_RE.fullmatch(raw) or int(raw) > _MAX_INT:
        raise InvalidField(f"{name} must be a revision number, got {raw[:40]!r}", field=name)
    return int(raw)


def _filter(request: web.Request, token: Token) -> EventFilter:
    """The request's filter within the token's scope. A plain model name outside the scope is
    refused (``permission_denied``, as ``/v1/versions?model=`` does); a glob is narrowed to it."""
    models = model_globs(request.query.getall("model", []), "model")
    for name in models:
        if not set("*?[") & set(name):
            token.require("reader", name)
    return EventFilter(
        actions=action_globs(request.query.getall("action", []), "action"),
        models=models,
        scope=token.models,
    )


def _wait(request: web.Request) -> float:
    raw = request.query.get("wait")
    if raw is None:
        return 0.0
    if not _WAIT_RE.fullmatch(raw) or float(raw) > MAX_WAIT_S:
        raise InvalidField(f"wait must be seconds from 0 to {MAX_WAIT_S:g}", field="wait")
    return float(raw)


class _Slots:
    """Counts streams and waiting long-polls (one per app, kept on the feed's app key)."""

    def __init__(self) -> None:
        self.used = 0

    def take(self) -> None:
        if self.used >= MAX_STREAMS:
            raise Unavailable(f"central serves at most {MAX_STREAMS} event streams at once")
        self.used += 1

    def give(self) -> None:
        self.used -= 1


_SLOTS = web.AppKey("event_slots", _Slots)


def _page_bytes(batch: Batch, tokens: PageTokens) -> bytes:
    """The page as JSON, the events' encodings spliced in as they are."""
    token = tokens.encode("events", batch.last) if batch.more else None
    tail = json.dumps(
        {"next_page_token": token, "last_revision": batch.last}, separators=(",", ":")
    ).encode()
    return b'{"items":[' + b",".join(e.json for e in batch.items) + b"]," + tail[1:]


async def events(request: web.Request) -> web.Response:
    """``GET /v1/events``: a page of events after ``after``; with ``wait``, a long-poll."""
    token = request_token(request)
    token.require("reader")
    _query(request, ("after", "limit", "page_token", "wait", "model", "action"))
    after = _revision(request.query.get("after", "0"), "after")
    page_token = request.query.get("page_token") or None
    tokens = request.app[REGISTRY].page_tokens
    if page_token is not None:
        position = tokens.decode("events", page_token)
        if isinstance(position, bool) or not isinstance(position, int) or position < 0:
            raise InvalidField("invalid page_token", field="page_token")
        after = min(max(after, position), _MAX_INT)
    limit, wait, flt = _limit(request), _wait(request), _filter(request, token)
    feed = request.app[FEED]
    batch = await feed.read(after, limit, flt)
    if not batch.items and not batch.more and wait > 0:
        slots = request.app[_SLOTS]
        slots.take()
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait
            while not batch.items and not batch.more:
                remaining = deadline - loop.time()
                if remaining <= 0 or not await feed.wait(batch.last, remaining):
                    break
                batch = await feed.read(batch.last, limit, flt)
        finally:
            slots.give()
    return web.Response(body=_page_bytes(batch, tokens), content_type="application/json")


def _frames(batch: Batch) -> bytes:
    return b"".join(b"id: %d\ndata: %s\n\n" % (e.revision, e.json) for e in batch.items)


async def stream(request: web.Request) -> web.StreamResponse:
    """``GET /v1/events/stream``: server-sent events after ``Last-Event-ID``, else after
    ``after``, else from now on."""
    token = request_token(request)
    token.require("reader")
    _query(request, ("after", "model", "action"))
    flt = _filter(request, token)
    feed = request.app[FEED]
    last_id = request.headers.get("Last-Event-ID", "").strip()
    if last_id:
        cursor = _revision(last_id, "Last-Event-ID")
    elif "after" in request.query:
        cursor = _revision(request.query["after"], "after")
    else:
        cursor = feed.head
    slots = request.app[_SLOTS]
    slots.take()
    try:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        await _follow(request, response, token, flt, cursor)
        return response
    finally:
        slots.give()


async def _follow(
    request: web.Request,
    response: web.StreamResponse,
    token: Token,
    flt: EventFilter,
    cursor: int,
) -> None:
    feed, auth = request.app[FEED], request.app[AUTH]
    header = request.headers.get("Authorization")
    loop = asyncio.get_running_loop()
    sent_id = cursor
    quiet_since = loop.time()

    async def write(data: bytes) -> None:
        nonlocal quiet_since
        await asyncio.wait_for(response.write(data), WRITE_TIMEOUT_S)
        quiet_since = loop.time()

    try:
        # Where the stream starts, as an id without data (no event fires): a client that
        # started "from now" reconnects from here, not from a later now.
        await write(b"retry: %d\nid: %d\n\n" % (RECONNECT_MS, cursor))
        while not feed.closed:
            try:
                if auth.authenticate(header).name != token.name:
                    break
            except RegistryError:  # revoked meanwhile
                await write(b": the token was revoked\n\n")
                break
            batch = await feed.read(cursor, STREAM_BATCH, flt)
            cursor = batch.last
            if batch.items:
                await write(_frames(batch))
                sent_id = batch.items[-1].revision
            if batch.more:
                continue
            idle = KEEPALIVE_S - (loop.time() - quiet_since)
            if idle > 0 and await feed.wait(cursor, idle):
                continue
            if feed.closed:
                break
            if loop.time() - quiet_since >= KEEPALIVE_S:
                progress = b"id: %d\n" % cursor if cursor > sent_id else b""
                await write(b": keep-alive\n" + progress + b"\n")
                sent_id = cursor
    except (TimeoutError, ConnectionError):
        pass  # a client too slow to read, or gone: the stream ends


def add_routes(app: web.Application) -> None:
    """Register the event routes (``central/openapi.py`` lists them too)."""
    app[_SLOTS] = _Slots()
    app.router.add_routes(
        [
            web.get("/v1/events", events, allow_head=False),
            web.get("/v1/events/stream", stream, allow_head=False),
        ]
    )
