"""Central's REST routes under ``/v1`` (plus ``/healthz``, ``/metrics``, ``/openapi.json``).

Handlers are thin: authorise (role, then model scope), parse the body or query, call one
:class:`modelreg.central.registry.Registry` method, answer JSON. No handler writes SQL, and none
turns an exception into a response: ``central/app.py``'s error middleware does, with one body
everywhere.

Request bodies are checked against the schemas of :data:`modelreg.central.openapi.BODIES` (unknown
fields, missing fields, wrong types and integers out of range are ``invalid_field`` naming the
field); the registry then checks values (names, digests, URIs, lengths) and owns those codes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from aiohttp import web

from modelreg.central.appkeys import (
    AUTH,
    CONFIG,
    DISPATCHER,
    LEASE,
    MONITOR,
    REGISTRY,
    REPLICATOR,
)
from modelreg.central.auth import Token, request_token
from modelreg.central.metrics import CONTENT_TYPE, METRICS, PREFIX
from modelreg.central.openapi import BODIES, document
from modelreg.central.records import parse_time
from modelreg.central.registry import STATUSES, UNSET
from modelreg.central.replica_check import PROBLEMS, render_metrics
from modelreg.central.validate import MAX_LIMIT
from modelreg.errors import InvalidField, InvalidJSON, PayloadTooLarge

__all__ = ["Handler", "add_routes"]

_MAX_INT = 2**63 - 1  # SQLite's INTEGER
_NUMBER_RE = re.compile(r"[0-9]{1,19}")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -- answers -----------------------------------------------------------------------------------


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        status=status,
        content_type="application/json",
    )


# -- request parsing ---------------------------------------------------------------------------


async def _body(request: web.Request, schema_name: str) -> dict[str, Any]:
    """The JSON object body, checked against ``BODIES[schema_name]``; an empty body is ``{}``.

    Raises :class:`PayloadTooLarge`, :class:`InvalidJSON` and :class:`InvalidField` (also for
    any query parameter: these routes take none, and one ignored — ``?expected=`` on a PUT —
    would silently turn a compare-and-set into a plain move).
    """
    _query(request, ())
    limit = request.app[CONFIG].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body over {limit} bytes", limit=limit)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"request body over {limit} bytes", limit=limit) from None
    if not raw.strip():
        value: Any = {}
    else:
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            raise InvalidJSON("request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise InvalidField("request body must be a JSON object", field="body")
    return _check(value, BODIES[schema_name])


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "boolean":
        return isinstance(value, bool)
    return kind == "null" and value is None


def _check_value(name: str, value: Any, schema: Mapping[str, Any]) -> None:
    if "enum" in schema:
        if value not in schema["enum"]:
            choices = ", ".join(map(str, schema["enum"]))
            raise InvalidField(f"field {name!r} must be one of {choices}", field=name)
        return
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    if not any(_type_ok(value, kind) for kind in kinds):
        wanted = " or ".join(kinds)
        raise InvalidField(f"field {name!r} must be {wanted}", field=name)
    if isinstance(value, int) and not isinstance(value, bool):
        low = schema.get("minimum", -_MAX_INT)
        if not low <= value <= _MAX_INT:
            raise InvalidField(f"field {name!r} must be between {low} and {_MAX_INT}", field=name)
    if isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, item in value.items():
            _check_value(f"{name}.{key}", item, schema["additionalProperties"])
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            _check_value(f"{name}[{index}]", item, schema["items"])


def _check(body: dict[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` without absent-meaning nulls, after checking it against ``schema``."""
    properties: Mapping[str, Any] = schema["properties"]
    out: dict[str, Any] = {}
    for name, value in body.items():
        if name not in properties:
            raise InvalidField(f"unknown field {name[:100]!r}", field=name[:100])
        prop = properties[name]
        nullable = isinstance(prop.get("type"), list) and "null" in prop["type"]
        if value is None and not nullable:
            continue  # null means "not given"
        _check_value(name, value, prop)
        out[name] = value
    for name in schema["required"]:
        if name not in out:
            raise InvalidField(f"missing required field {name!r}", field=name)
    return out


def _query(request: web.Request, allowed: tuple[str, ...]) -> None:
    """Refuse query parameters outside ``allowed`` (and ``wait`` on writes, which
    ``central/durability.py`` reads)."""
    for name in request.query:
        if name not in allowed and not (name == "wait" and request.method != "GET"):
            raise InvalidField(f"unknown query parameter {name[:100]!r}", field=name[:100])


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return 100
    if not _NUMBER_RE.fullmatch(raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidField(f"limit must be an integer from 1 to {MAX_LIMIT}", field="limit")
    return int(raw)


def _page(request: web.Request) -> dict[str, Any]:
    return {"limit": _limit(request), "page_token": request.query.get("page_token") or None}


def _time(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return parse_time(raw)
    except ValueError as exc:
        raise InvalidField(f"{name}: {exc}", field=name) from None


def _status(request: web.Request) -> str | None:
    status = request.query.get("status")
    if status is not None and status not in STATUSES:
        raise InvalidField(f"status must be one of {', '.join(STATUSES)}", field="status")
    return status


def _version(request: web.Request) -> int:
    raw = request.match_info["version"]
    if not _NUMBER_RE.fullmatch(raw) or not 1 <= int(raw) <= _MAX_INT:
        raise InvalidField(f"version must be a positive integer, got {raw!r}", field="version")
    return int(raw)


def _alias_role(request: web.Request) -> str:
    """Protected aliases need a deployer; others a publisher."""
    alias = request.match_info["alias"]
    return "deployer" if alias in request.app[CONFIG].protected_aliases else "publisher"


def _page_answer(page: Mapping[str, Any]) -> web.Response:
    return _json({"items": page["items"], "next_page_token": page.get("next_page_token")})


# -- public routes -----------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    """Liveness and the registry head; ``status`` is ``degraded`` while the replica lost its
    history, holds a corrupt file or another history, or another central took the writer
    lock (central/replica_check.py, central/lease.py)."""
    replicator = request.app.get(REPLICATOR)
    registry = request.app[REGISTRY]
    replication: dict[str, Any] | None = None
    degraded = False
    if replicator is not None:
        replication = replicator.status()
        monitor, lease = request.app.get(MONITOR), request.app.get(LEASE)
        replication["replica"] = monitor.status() if monitor is not None else None
        replication["writer_lock"] = lease.status() if lease is not None else None
        degraded = (monitor is not None and monitor.status()["state"] in PROBLEMS) or (
            lease is not None and lease.status().get("lost") is not None
        )
    return _json(
        {
            "status": "degraded" if degraded else "ok",
            "revision": await registry.revision(),
            "revision_hash": registry.revision_hash(),
            "replication": replication,
        }
    )


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    text = request.app[METRICS].render(await registry.revision(), await registry.counts())
    dispatcher = request.app.get(DISPATCHER)
    if dispatcher is not None:
        text += dispatcher.metrics_text(PREFIX)
    text += render_metrics(request.app.get(REPLICATOR), request.app.get(MONITOR))
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return _json(document())


# -- models ------------------------------------------------------------------------------------


async def create_model(request: web.Request) -> web.Response:
    token = request_token(request)
    token.require("publisher")
    body = await _body(request, "ModelCreate")
    token.require("publisher", body["name"])
    record = await request.app[REGISTRY].create_model(token.name, **body)
    return _json(record, 201)


async def list_models(request: web.Request) -> web.Response:
    token = request_token(request)
    token.require("reader")
    _query(request, ("prefix", "limit", "page_token"))
    page = await request.app[REGISTRY].list_models(
        prefix=request.query.get("prefix") or None, scope=token.models, **_page(request)
    )
    return _page_answer(page)


async def get_model(request: web.Request) -> web.Response:
    model = request.match_info["model"]
    request_token(request).require("reader", model)
    _query(request, ())
    return _json(await request.app[REGISTRY].get_model(model))


async def update_model(request: web.Request) -> web.Response:
    token, model = request_token(request), request.match_info["model"]
    token.require("publisher", model)
    body = await _body(request, "ModelUpdate")
    return _json(await request.app[REGISTRY].update_model(token.name, model, **body))


# -- versions ----------------------------------------------------------------------------------


async def register_version(request: web.Request) -> web.Response:
    token, model = request_token(request), request.match_info["model"]
    token.require("publisher", model)
    body = await _body(request, "VersionCreate")
    record, created = await request.app[REGISTRY].register_version(token.name, model, **body)
    return _json(record, 201 if created else 200)


async def list_versions(request: web.Request) -> web.Response:
    model = request.match_info["model"]
    request_token(request).require("reader", model)
    _query(request, ("status", "limit", "page_token"))
    page = await request.app[REGISTRY].list_versions(
        model, status=_status(request), **_page(request)
    )
    return _page_answer(page)


async def get_version(request: web.Request) -> web.Response:
    model = request.match_info["model"]
    request_token(request).require("reader", model)
    _query(request, ())
    return _json(await request.app[REGISTRY].get_version(model, _version(request)))


async def update_version(request: web.Request) -> web.Response:
    token, model = request_token(request), request.match_info["model"]
    token.require("publisher", model)
    version = _version(request)
    body = await _body(request, "VersionUpdate")
    record = await request.app[REGISTRY].update_version(token.name, model, version, **body)
    return _json(record)


def _decide(approve: bool) -> Handler:
    async def decide(request: web.Request) -> web.Response:
        token, model = request_token(request), request.match_info["model"]
        token.require("approver", model)
        version = _version(request)
        body = await _body(request, "Decision")
        record = await request.app[REGISTRY].decide(
            token.name, model, version, approve, comment=body.get("comment", "")
        )
        return _json(record)

    decide.__name__ = "approve" if approve else "reject"
    return decide


async def archive(request: web.Request) -> web.Response:
    token, model = request_token(request), request.match_info["model"]
    token.require("admin", model)
    version = _version(request)
    body = await _body(request, "Archive")
    record = await request.app[REGISTRY].archive(
        token.name, model, version, reason=body.get("reason", "")
    )
    return _json(record)


# -- aliases -----------------------------------------------------------------------------------


async def set_alias(request: web.Request) -> web.Response:
    token, model, alias = (
        request_token(request),
        request.match_info["model"],
        request.match_info["alias"],
    )
    token.require(_alias_role(request), model)
    body = await _body(request, "AliasSet")
    record = await request.app[REGISTRY].set_alias(
        token.name,
        model,
        alias,
        body["version"],
        expected=body.get("expected", UNSET),
        reason=body.get("reason", ""),
    )
    return _json(record)


async def delete_alias(request: web.Request) -> web.Response:
    token, model, alias = (
        request_token(request),
        request.match_info["model"],
        request.match_info["alias"],
    )
    token.require(_alias_role(request), model)
    _query(request, ("expected",))
    raw = request.query.get("expected")
    expected: Any = UNSET
    if raw is not None:
        if raw.lower() == "none":
            expected = None
        elif _NUMBER_RE.fullmatch(raw) and 1 <= int(raw) <= _MAX_INT:
            expected = int(raw)
        else:
            raise InvalidField(
                f"expected must be a version number or 'none', got {raw!r}", field="expected"
            )
    record = await request.app[REGISTRY].delete_alias(token.name, model, alias, expected=expected)
    return _json(record)


async def rollback_alias(request: web.Request) -> web.Response:
    token, model, alias = (
        request_token(request),
        request.match_info["model"],
        request.match_info["alias"],
    )
    token.require(_alias_role(request), model)
    body = await _body(request, "Reason")
    record = await request.app[REGISTRY].rollback_alias(
        token.name, model, alias, reason=body.get("reason", "")
    )
    return _json(record)


async def get_alias(request: web.Request) -> web.Response:
    model, alias = request.match_info["model"], request.match_info["alias"]
    request_token(request).require("reader", model)
    _query(request, ("at",))
    return _json(await request.app[REGISTRY].get_alias(model, alias, at=_time(request, "at")))


async def alias_history(request: web.Request) -> web.Response:
    model, alias = request.match_info["model"], request.match_info["alias"]
    request_token(request).require("reader", model)
    _query(request, ("limit", "page_token"))
    page = await request.app[REGISTRY].alias_history(model, alias, **_page(request))
    return _page_answer(page)


# -- resolve, search, audit (events: central/event_routes.py) ---------------------------


async def resolve(request: web.Request) -> web.Response:
    model, ref = request.match_info["model"], request.match_info["ref"]
    request_token(request).require("reader", model)
    _query(request, ("at",))
    return _json(await request.app[REGISTRY].resolve(model, ref, at=_time(request, "at")))


async def search_versions(request: web.Request) -> web.Response:
    token = request_token(request)
    token.require("reader")
    _query(
        request,
        (
            "model",
            "status",
            "tag",
            "run_id",
            "alias",
            "created_after",
            "created_before",
            "limit",
            "page_token",
        ),
    )
    model = request.query.get("model") or None
    if model is not None:
        token.require("reader", model)
    tags: dict[str, str] = {}
    for pair in request.query.getall("tag", []):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidField(f"tag must be key=value, got {pair!r}", field="tag")
        if key in tags and tags[key] != value:  # both must match: no version can
            raise InvalidField(f"tag {key!r} given twice with different values", field="tag")
        tags[key] = value
    page = await request.app[REGISTRY].search_versions(
        model=model,
        status=_status(request),
        tags=tags or None,
        run_id=request.query.get("run_id") or None,
        alias=request.query.get("alias") or None,
        created_after=_time(request, "created_after"),
        created_before=_time(request, "created_before"),
        scope=token.models,
        **_page(request),
    )
    return _page_answer(page)


async def verify_audit(request: web.Request) -> web.Response:
    token = request_token(request)
    token.require("admin")
    token.require_unscoped("verifying the audit log")
    _query(request, ())
    return _json(await request.app[REGISTRY].verify_audit())


# -- tokens ------------------------------------------------------------------------------------


def _admin(request: web.Request) -> Token:
    token = request_token(request)
    token.require("admin")
    token.require_unscoped("managing tokens")
    return token


async def create_token(request: web.Request) -> web.Response:
    token = _admin(request)
    body = await _body(request, "TokenCreate")
    change = await request.app[AUTH].create(
        token.name, body["name"], body["role"], body.get("models")
    )
    answer = {
        **change.token.record(),
        "secret": change.secret,
        "revision": change.revision,
        "revision_hash": change.revision_hash,
    }
    return _json(answer, 201)


async def list_tokens(request: web.Request) -> web.Response:
    _admin(request)
    _query(request, ())
    tokens = await request.app[AUTH].tokens()
    return _json({"items": [t.record() for t in tokens], "next_page_token": None})


async def revoke_token(request: web.Request) -> web.Response:
    token = _admin(request)
    _query(request, ())
    change = await request.app[AUTH].revoke(token, request.match_info["name"])
    return _json(
        {
            **change.token.record(),
            "revision": change.revision,
            "revision_hash": change.revision_hash,
        }
    )


# -- the table ---------------------------------------------------------------------------------


def add_routes(app: web.Application) -> None:
    """Register the routes of this module (``central/openapi.py`` lists them, with those of
    ``central/event_routes.py`` and ``central/webhook_routes.py``; a test checks)."""
    v, m, n = "/v1", "/v1/models/{model}", "/v1/models/{model}/versions/{version}"
    alias = m + "/aliases/{alias}"
    app.router.add_routes(
        [
            web.get("/healthz", healthz, allow_head=False),
            web.get("/metrics", metrics, allow_head=False),
            web.get("/openapi.json", openapi, allow_head=False),
            web.post(v + "/models", create_model),
            web.get(v + "/models", list_models, allow_head=False),
            web.get(m, get_model, allow_head=False),
            web.patch(m, update_model),
            web.post(m + "/versions", register_version),
            web.get(m + "/versions", list_versions, allow_head=False),
            web.get(n, get_version, allow_head=False),
            web.patch(n, update_version),
            web.post(n + "/approve", _decide(True)),
            web.post(n + "/reject", _decide(False)),
            web.post(n + "/archive", archive),
            web.put(alias, set_alias),
            web.delete(alias, delete_alias),
            web.get(alias, get_alias, allow_head=False),
            web.post(alias + "/rollback", rollback_alias),
            web.get(alias + "/history", alias_history, allow_head=False),
            web.get(v + "/resolve/{model}/{ref}", resolve, allow_head=False),
            web.get(v + "/versions", search_versions, allow_head=False),
            web.get(v + "/audit/verify", verify_audit, allow_head=False),
            web.post(v + "/tokens", create_token),
            web.get(v + "/tokens", list_tokens, allow_head=False),
            web.delete(v + "/tokens/{name}", revoke_token),
        ]
    )
