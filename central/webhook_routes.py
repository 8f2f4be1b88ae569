"""Webhook routes under ``/v1/webhooks`` (admin, unscoped): subscriptions, their deliveries,
tests and redeliveries (docs/API.md, "Webhooks").

Thin, like ``central/api.py``: authorise, parse (bodies against
:data:`modelreg.central.openapi.BODIES`), call :class:`~modelreg.central.webhooks.Subscriptions`
or the :class:`~modelreg.central.delivery.Dispatcher`, answer JSON. A subscription's secret is in
the answer of its creation (and of a rotation) only.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from modelreg.central.api import _MAX_INT, _NUMBER_RE, _body, _json, _limit, _query
from modelreg.central.appkeys import DELIVERY_LOG, DISPATCHER, REGISTRY, WEBHOOKS
from modelreg.central.auth import request_token
from modelreg.central.webhooks import Subscription
from modelreg.errors import DeliveryNotFound

__all__ = ["add_routes"]


def _admin(request: web.Request) -> str:
    token = request_token(request)
    token.require("admin")
    token.require_unscoped("managing webhooks")
    return token.name


def _subscription(request: web.Request) -> Subscription:
    return request.app[WEBHOOKS].get(request.match_info["webhook"])


def _delivery_id(request: web.Request) -> int:
    raw = request.match_info["delivery"]
    if not _NUMBER_RE.fullmatch(raw) or not 1 <= int(raw) <= _MAX_INT:
        raise DeliveryNotFound(f"no delivery {raw[:40]!r}", delivery=raw[:40])
    return int(raw)


def _answer(request: web.Request, sub: Subscription, **extra: Any) -> dict[str, Any]:
    return {**sub.record(), "delivery": request.app[DISPATCHER].status(sub), **extra}


async def create_webhook(request: web.Request) -> web.Response:
    actor = _admin(request)
    body = await _body(request, "WebhookCreate")
    change = await request.app[WEBHOOKS].create(actor, **body)
    return _json(_answer(request, change.subscription, **change.record()), 201)


async def list_webhooks(request: web.Request) -> web.Response:
    _admin(request)
    _query(request, ())
    items = [_answer(request, sub) for sub in request.app[WEBHOOKS].all()]
    return _json({"items": items, "next_page_token": None})


async def get_webhook(request: web.Request) -> web.Response:
    _admin(request)
    _query(request, ())
    return _json(_answer(request, _subscription(request)))


async def update_webhook(request: web.Request) -> web.Response:
    actor = _admin(request)
    body = await _body(request, "WebhookUpdate")  # read before any 404: keep-alive stays sane
    webhook = _subscription(request).id
    change = await request.app[WEBHOOKS].update(actor, webhook, body)
    return _json(_answer(request, change.subscription, **change.record()))


async def delete_webhook(request: web.Request) -> web.Response:
    actor = _admin(request)
    _query(request, ())
    change = await request.app[WEBHOOKS].delete(actor, _subscription(request).id)
    return _json({**change.subscription.record(), **change.record()})


async def test_webhook(request: web.Request) -> web.Response:
    _admin(request)
    await _body(request, "Empty")
    sub = _subscription(request)
    return _json(await request.app[DISPATCHER].test(sub))


async def list_deliveries(request: web.Request) -> web.Response:
    _admin(request)
    _query(request, ("state", "limit", "page_token"))
    sub = _subscription(request)
    page = await request.app[DELIVERY_LOG].page(
        sub.id,
        _limit(request),
        request.app[REGISTRY].page_tokens,
        request.query.get("page_token") or None,
        request.query.get("state") or None,
    )
    return _json(page)


async def get_delivery(request: web.Request) -> web.Response:
    _admin(request)
    _query(request, ())
    sub = _subscription(request)
    return _json(await request.app[DELIVERY_LOG].get(sub.id, _delivery_id(request)))


async def redeliver(request: web.Request) -> web.Response:
    _admin(request)
    await _body(request, "Empty")
    sub = _subscription(request)
    delivery = _delivery_id(request)
    return _json(await request.app[DISPATCHER].redeliver(sub, delivery))


def add_routes(app: web.Application) -> None:
    """Register the webhook routes (``central/openapi.py`` lists them too)."""
    w = "/v1/webhooks/{webhook}"
    d = w + "/deliveries/{delivery}"
    app.router.add_routes(
        [
            web.post("/v1/webhooks", create_webhook),
            web.get("/v1/webhooks", list_webhooks, allow_head=False),
            web.get(w, get_webhook, allow_head=False),
            web.patch(w, update_webhook),
            web.delete(w, delete_webhook),
            web.post(w + "/test", test_webhook),
            web.get(w + "/deliveries", list_deliveries, allow_head=False),
            web.get(d, get_delivery, allow_head=False),
            web.post(d + "/redeliver", redeliver),
        ]
    )
