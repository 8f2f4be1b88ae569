"""The aiohttp application factory of central: :func:`create_app`.

Middlewares, outermost first:

1. ``metrics_middleware`` times every request and counts it by route and final status;
2. ``error_middleware`` turns every exception into the one error body of ``central/errors.py``
   (a :class:`RegistryError` with its code and status; aiohttp's 404/405/413 as ``not_found``,
   ``method_not_allowed``, ``payload_too_large``; a client that leaves mid-body as
   ``bad_request``, logged as info; anything else as a generic 500 ``internal``, logged here
   and never described on the wire);
3. ``auth_middleware`` authenticates every ``/v1`` request (401 ``unauthenticated``); handlers
   check roles and scopes.

Cleanup contexts, in order: lock the data directory (one central per data directory, even
without replication), restore from the replica, open the registry and the tokens, run
replication, watch the replica (central/replica_check.py), run the webhooks
(subscriptions, delivery log, workers), run the heartbeat. They unwind in reverse, so the
webhooks' last positions are written before replication flushes. At shutdown the event feed
closes first: long-polls answer and streams end, so no open stream holds central's stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator

from aiohttp import web

from modelreg.central import api, event_routes, webhook_routes
from modelreg.central.appkeys import (
    AUTH,
    CONFIG,
    DELIVERY_LOG,
    DISPATCHER,
    FEED,
    MONITOR,
    REGISTRY,
    REPLICATOR,
    WEBHOOKS,
)
from modelreg.central.auth import TOKEN, Auth
from modelreg.central.config import CentralConfig, ConfigError
from modelreg.central.delivery import Dispatcher
from modelreg.central.delivery_log import DeliveryLog
from modelreg.central.durability import ack_middleware
from modelreg.central.feed import EventFeed
from modelreg.central.lease import DATA_DIR_LOCK_NAME, FileLock
from modelreg.central.metrics import METRICS, Metrics
from modelreg.central.pagetoken import PageTokens
from modelreg.central.registry import Registry
from modelreg.central.replica_check import ReplicaMonitor
from modelreg.central.replication import replicate_ctx, restore_ctx
from modelreg.central.webhooks import Subscriptions
from modelreg.errors import (
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RegistryError,
    error_body,
    from_body,
)

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_UNMATCHED = "unmatched"


def _error_response(exc: RegistryError) -> web.Response:
    body = error_body(exc)
    try:
        text = json.dumps(body, ensure_ascii=False)
    except (TypeError, ValueError):  # a detail that is not JSON: keep code and message only
        log.error("unserialisable details in %r", exc)
        text = json.dumps({"error": {"code": exc.code, "message": exc.message}})
    return web.Response(text=text, status=exc.status, content_type="application/json")


def _from_http(request: web.Request, exc: web.HTTPException) -> RegistryError:
    if exc.status == 404:
        return NotFound(f"no route {request.path}", path=request.path)
    if exc.status == 405:
        return MethodNotAllowed(f"{request.method} is not allowed on {request.path}")
    if exc.status == 413:
        limit = request.app[CONFIG].max_body_bytes
        return PayloadTooLarge(f"request body over {limit} bytes", limit=limit)
    if exc.status == 400:
        return InvalidRequest(f"bad request: {exc.reason}")
    return from_body(None, exc.status)


@web.middleware
async def error_middleware(request: web.Request, handler: api.Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RegistryError as exc:
        if type(exc) is RegistryError:  # a bare internal error: its message is not for the wire
            log.error("internal error on %s %s: %r", request.method, request.path, exc)
            return _error_response(RegistryError("internal error"))
        return _error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _error_response(_from_http(request, exc))
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except asyncio.CancelledError:
        raise
    except ConnectionResetError:  # the client went away mid-body: nobody reads this answer
        log.info("client left during %s %s", request.method, request.path)
        return _error_response(InvalidRequest("the connection closed before the request ended"))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error_response(RegistryError("internal error"))


@web.middleware
async def auth_middleware(request: web.Request, handler: api.Handler) -> web.StreamResponse:
    if request.match_info.http_exception is None and request.path.startswith("/v1/"):
        auth = request.app[AUTH]
        token = auth.authenticate(request.headers.get("Authorization"))
        request[TOKEN] = token
        await auth.touch(token)
    return await handler(request)


@web.middleware
async def metrics_middleware(request: web.Request, handler: api.Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else _UNMATCHED
        request.app[METRICS].observe(request.method, route, status, time.perf_counter() - started)


async def _data_dir_ctx(app: web.Application) -> AsyncIterator[None]:
    """Lock the data directory first: one central per data directory, replicated or not.

    Raises :class:`modelreg.central.lease.LeaseHeld` naming the holder."""
    config = app[CONFIG]
    config.data_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(config.data_dir, DATA_DIR_LOCK_NAME, "the data directory")
    await lock.acquire()
    try:
        yield
    finally:
        await lock.release()


async def _registry_ctx(app: web.Application) -> AsyncIterator[None]:
    registry, auth = app[REGISTRY], app[AUTH]
    await registry.open()
    try:
        await auth.open()
        registry.page_tokens = PageTokens(auth.page_token_key)
        try:
            yield
        finally:
            await auth.close()
    finally:
        await registry.close()


async def _webhooks_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the subscriptions and the delivery log, then start the workers."""
    subscriptions, deliveries = app[WEBHOOKS], app[DELIVERY_LOG]
    await subscriptions.open()
    try:
        await deliveries.open()
        try:
            await app[DISPATCHER].open()
            try:
                yield
            finally:
                await app[DISPATCHER].close()
        finally:
            await deliveries.close()
    finally:
        await subscriptions.close()


async def _close_feed(app: web.Application) -> None:
    app[FEED].close()


async def _beat(registry: Registry, interval_s: float) -> None:
    while True:
        try:
            await registry.heartbeat()
        except Exception:  # keep beating: a missed beat shows as staleness on the sidecars
            log.exception("heartbeat failed")
        await asyncio.sleep(interval_s)


async def _monitor_ctx(app: web.Application) -> AsyncIterator[None]:
    """Watch the replica while replication runs (central/replica_check.py)."""
    replicator = app.get(REPLICATOR)
    if replicator is None:
        yield
        return
    registry = app[REGISTRY]

    async def local_hash(revision: int) -> str | None:
        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT hash FROM events WHERE revision = ?", (revision,))
            found = row.fetchone()
            return None if found is None else str(found[0])

        return await registry.store.read(read)

    monitor = ReplicaMonitor(app[CONFIG], replicator, local_hash, os.environ)
    app[MONITOR] = monitor
    await monitor.start()
    try:
        yield
    finally:
        await monitor.stop()


async def _heartbeat_ctx(app: web.Application) -> AsyncIterator[None]:
    interval = app[CONFIG].heartbeat_interval_s
    task = asyncio.create_task(_beat(app[REGISTRY], interval)) if interval > 0 else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def create_app(config: CentralConfig) -> web.Application:
    """Central's application for ``config``; nothing is opened until the app starts.

    Raises :class:`~modelreg.central.config.ConfigError` for ``write_ack=replicated`` without a
    replica."""
    if config.write_ack == "replicated" and config.replica_url is None:
        raise ConfigError("setting write_ack: replicated needs a replica (not --replica none)")
    app = web.Application(
        middlewares=[metrics_middleware, error_middleware, auth_middleware, ack_middleware],
        # aiohttp's own limit answers in plain text: api._body turns it into our 413 body
        client_max_size=config.max_body_bytes,
    )
    app[CONFIG] = config
    registry = app[REGISTRY] = Registry(config)
    app[AUTH] = Auth(config, log=registry)
    app[METRICS] = Metrics()
    feed = app[FEED] = EventFeed(registry.store)
    subscriptions = app[WEBHOOKS] = Subscriptions(config, log=registry)
    deliveries = app[DELIVERY_LOG] = DeliveryLog(config.deliveries_db, config.webhook_history_s)
    app[DISPATCHER] = Dispatcher(config, registry.store, feed, subscriptions, deliveries)
    api.add_routes(app)
    event_routes.add_routes(app)
    webhook_routes.add_routes(app)
    app.on_shutdown.append(_close_feed)
    app.cleanup_ctx.extend(
        [
            _data_dir_ctx,
            restore_ctx,
            _registry_ctx,
            replicate_ctx,
            _monitor_ctx,
            _webhooks_ctx,
            _heartbeat_ctx,
        ]
    )
    return app
