"""The OpenAPI 3.1 document of central's REST API, served at ``/openapi.json``.

:data:`OPERATIONS` is written out by hand, one entry per route, and a test checks that it names
exactly the routes of the app's router. The request-body schemas in :data:`BODIES` are not only
documentation: ``central/api.py`` validates every request body against them, so what the
document says a body may hold is what the server accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

from modelreg.errors import CODES, HTTP_STATUS

__all__ = ["BODIES", "OPERATIONS", "Operation", "document"]

_STR: dict[str, Any] = {"type": "string"}
_INT: dict[str, Any] = {"type": "integer", "minimum": 0}
_VERSION: dict[str, Any] = {"type": "integer", "minimum": 1}
_OBJ: dict[str, Any] = {"type": "object"}
_TAGS: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}
_NUMBERS: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "number"}}
_GLOBS: dict[str, Any] = {"type": "array", "items": _STR}


def _body(required: tuple[str, ...] = (), **properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


#: Request bodies by name. ``null`` for an optional field means "not given", except where the
#: schema's type includes ``"null"`` (``expected``: null means "I believe the alias is unset").
BODIES: dict[str, dict[str, Any]] = {
    "ModelCreate": _body(("name",), name=_STR, description=_STR, owner=_STR, tags=_TAGS),
    "ModelUpdate": _body(description=_STR, owner=_STR, tags=_TAGS),
    "VersionCreate": _body(
        ("artifact_uri", "sha256"),
        artifact_uri=_STR,
        sha256={"type": "string", "pattern": "^[0-9a-f]{64}$"},
        size=_INT,
        format=_STR,
        run_id=_STR,
        commit=_STR,
        dataset_uri=_STR,
        dataset_digest=_STR,
        parent_version=_VERSION,
        params=_OBJ,
        metrics=_NUMBERS,
        tags=_TAGS,
        description=_STR,
        idempotency_key=_STR,
    ),
    "VersionUpdate": _body(description=_STR, tags=_TAGS),
    "Decision": _body(comment=_STR),
    "Archive": _body(reason=_STR),
    "AliasSet": _body(
        ("version",),
        version=_VERSION,
        expected={"type": ["integer", "null"], "minimum": 1},
        reason=_STR,
    ),
    "Reason": _body(reason=_STR),
    "TokenCreate": _body(
        ("name", "role"),
        name=_STR,
        role={"enum": ["reader", "publisher", "approver", "deployer", "admin"]},
        models={"type": "array", "items": _STR},
    ),
    "WebhookCreate": _body(
        ("url",),
        url=_STR,
        events=_GLOBS,
        models=_GLOBS,
        description=_STR,
    ),
    "WebhookUpdate": _body(
        url=_STR,
        events=_GLOBS,
        models=_GLOBS,
        description=_STR,
        enabled={"type": "boolean"},
        rotate_secret={"type": "boolean"},
    ),
    "Empty": _body(),
}


@dataclass(frozen=True)
class Operation:
    """One route: ``role`` is the least role it needs (None: no token)."""

    method: str
    path: str
    summary: str
    role: str | None
    #: Query parameters: name -> description.
    query: dict[str, str] = field(default_factory=dict)
    #: Name of the request body in :data:`BODIES`, if any.
    body: str | None = None
    #: Success status and the schema (in ``components``) of its answer.
    status: int = 200
    answer: str = "Object"


_PAGE = {"limit": "page size, 1-1000 (default 100)", "page_token": "continue after a page"}
_EVENT_FILTERS = {
    "model": "model-name glob, repeatable (any may match)",
    "action": "action or glob such as version.*, repeatable (any may match)",
}
_WEBHOOK = "/v1/webhooks/{webhook}"
_ALIAS_ROLE = "deployer for a protected alias, publisher otherwise"

#: Every route of the API; a test compares this list with the router.
OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/healthz", "Liveness, revision and replication status.", None),
    Operation("GET", "/metrics", "Prometheus metrics (text format).", None, answer="Text"),
    Operation("GET", "/openapi.json", "This document.", None),
    Operation(
        "POST",
        "/v1/models",
        "Create a model.",
        "publisher",
        body="ModelCreate",
        status=201,
        answer="Model",
    ),
    Operation(
        "GET",
        "/v1/models",
        "List models by name.",
        "reader",
        query={"prefix": "only names starting with this", **_PAGE},
        answer="Page",
    ),
    Operation(
        "GET",
        "/v1/models/{model}",
        "A model with its aliases and latest version.",
        "reader",
        answer="Model",
    ),
    Operation(
        "PATCH",
        "/v1/models/{model}",
        "Update a model's description, owner or tags.",
        "publisher",
        body="ModelUpdate",
        answer="Model",
    ),
    Operation(
        "POST",
        "/v1/models/{model}/versions",
        "Register a version (201), or return the existing one on an idempotent retry (200).",
        "publisher",
        body="VersionCreate",
        status=201,
        answer="Version",
    ),
    Operation(
        "GET",
        "/v1/models/{model}/versions",
        "List a model's versions in version order.",
        "reader",
        query={"status": "registered, approved, rejected or archived", **_PAGE},
        answer="Page",
    ),
    Operation(
        "GET",
        "/v1/models/{model}/versions/{version}",
        "One version.",
        "reader",
        answer="Version",
    ),
    Operation(
        "PATCH",
        "/v1/models/{model}/versions/{version}",
        "Update a version's description or tags.",
        "publisher",
        body="VersionUpdate",
        answer="Version",
    ),
    Operation(
        "POST",
        "/v1/models/{model}/versions/{version}/approve",
        "Approve a version.",
        "approver",
        body="Decision",
        answer="Version",
    ),
    Operation(
        "POST",
        "/v1/models/{model}/versions/{version}/reject",
        "Reject a version.",
        "approver",
        body="Decision",
        answer="Version",
    ),
    Operation(
        "POST",
        "/v1/models/{model}/versions/{version}/archive",
        "Archive a version.",
        "admin",
        body="Archive",
        answer="Version",
    ),
    Operation(
        "PUT",
        "/v1/models/{model}/aliases/{alias}",
        "Point an alias at a version (compare-and-set with expected).",
        _ALIAS_ROLE,
        body="AliasSet",
        answer="AliasMove",
    ),
    Operation(
        "DELETE",
        "/v1/models/{model}/aliases/{alias}",
        "Unset an alias.",
        _ALIAS_ROLE,
        query={"expected": "version the alias points at now, or 'none'"},
        answer="AliasMove",
    ),
    Operation(
        "GET",
        "/v1/models/{model}/aliases/{alias}",
        "What an alias points at (now or at a time).",
        "reader",
        query={"at": "RFC 3339 time"},
        answer="Alias",
    ),
    Operation(
        "POST",
        "/v1/models/{model}/aliases/{alias}/rollback",
        "Re-point an alias at its previous approved target.",
        _ALIAS_ROLE,
        body="Reason",
        answer="AliasMove",
    ),
    Operation(
        "GET",
        "/v1/models/{model}/aliases/{alias}/history",
        "Every move of an alias, newest first.",
        "reader",
        query=_PAGE,
        answer="Page",
    ),
    Operation(
        "GET",
        "/v1/resolve/{model}/{ref}",
        "Resolve an alias, a version number or 'latest' to a version.",
        "reader",
        query={"at": "RFC 3339 time"},
        answer="Resolution",
    ),
    Operation(
        "GET",
        "/v1/versions",
        "Search versions across models.",
        "reader",
        query={
            "model": "model name",
            "status": "registered, approved, rejected or archived",
            "tag": "k=v, repeatable (all must match)",
            "run_id": "training run id",
            "alias": "versions some alias points at",
            "created_after": "RFC 3339 time",
            "created_before": "RFC 3339 time",
            **_PAGE,
        },
        answer="Page",
    ),
    Operation(
        "GET",
        "/v1/events",
        "The event log, oldest first; with wait, a long-poll.",
        "reader",
        query={
            "after": "revision to start after (default 0)",
            "wait": "seconds (0-60) to wait for a matching event when there is none",
            **_EVENT_FILTERS,
            **_PAGE,
        },
        answer="EventPage",
    ),
    Operation(
        "GET",
        "/v1/events/stream",
        "Server-sent events: id is the revision; resume with Last-Event-ID.",
        "reader",
        query={"after": "revision to start after (default: now)", **_EVENT_FILTERS},
        answer="EventStream",
    ),
    Operation("GET", "/v1/audit/verify", "Recompute the event hash chain.", "admin"),
    Operation(
        "POST",
        "/v1/tokens",
        "Create a token; its secret is in this answer only.",
        "admin",
        body="TokenCreate",
        status=201,
        answer="Token",
    ),
    Operation("GET", "/v1/tokens", "List tokens (never their secrets).", "admin"),
    Operation("DELETE", "/v1/tokens/{name}", "Revoke a token.", "admin", answer="Token"),
    Operation(
        "POST",
        "/v1/webhooks",
        "Subscribe a URL to events; its signing secret is in this answer only.",
        "admin",
        body="WebhookCreate",
        status=201,
        answer="Webhook",
    ),
    Operation("GET", "/v1/webhooks", "List webhooks (never their secrets).", "admin"),
    Operation(
        "GET", _WEBHOOK, "A webhook and where its deliveries stand.", "admin", answer="Webhook"
    ),
    Operation(
        "PATCH",
        _WEBHOOK,
        "Change a webhook: url, filters, description, enabled; or rotate its secret.",
        "admin",
        body="WebhookUpdate",
        answer="Webhook",
    ),
    Operation("DELETE", _WEBHOOK, "Delete a webhook.", "admin", answer="Webhook"),
    Operation(
        "POST",
        _WEBHOOK + "/test",
        "Send a signed webhook.test ping now; the delivery with its attempt.",
        "admin",
        body="Empty",
        answer="Delivery",
    ),
    Operation(
        "GET",
        _WEBHOOK + "/deliveries",
        "A webhook's deliveries, newest first, each with its last attempt.",
        "admin",
        query={"state": "pending, delivered or failed", **_PAGE},
        answer="Page",
    ),
    Operation(
        "GET",
        _WEBHOOK + "/deliveries/{delivery}",
        "One delivery with every attempt.",
        "admin",
        answer="Delivery",
    ),
    Operation(
        "POST",
        _WEBHOOK + "/deliveries/{delivery}/redeliver",
        "Send a delivery's message again now (same webhook-id); the new delivery.",
        "admin",
        body="Empty",
        answer="Delivery",
    ),
)

_SCHEMAS: dict[str, dict[str, Any]] = {
    "Object": {"type": "object"},
    "Text": {"type": "string"},
    "Model": {"type": "object", "description": "docs/API.md, Records: Model"},
    "Version": {"type": "object", "description": "docs/API.md, Records: Version"},
    "Alias": {"type": "object", "description": "docs/API.md, Records: Alias"},
    "AliasMove": {"type": "object", "description": "docs/API.md, Records: Alias move"},
    "Resolution": {"type": "object", "description": "docs/API.md, Records: Resolve"},
    "Token": {"type": "object", "description": "docs/API.md, Tokens"},
    "Webhook": {"type": "object", "description": "docs/API.md, Webhooks: Subscription"},
    "Delivery": {"type": "object", "description": "docs/API.md, Webhooks: Delivery"},
    "EventPage": {
        "type": "object",
        "properties": {
            "items": {"type": "array"},
            "next_page_token": {"type": ["string", "null"]},
            "last_revision": {"type": "integer"},
        },
    },
    "EventStream": {"type": "string", "description": "text/event-stream; docs/API.md, Events"},
    "Page": {
        "type": "object",
        "properties": {
            "items": {"type": "array"},
            "next_page_token": {"type": ["string", "null"]},
        },
    },
    "Error": {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "code": {"enum": sorted(CODES)},
                    "message": {"type": "string"},
                },
                "required": ["code", "message"],
            }
        },
    },
}


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def _operation(op: Operation) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": _STR}
        for name in _path_params(op.path)
    ]
    query = dict(op.query)
    if op.method != "GET" and op.path.startswith("/v1/"):
        query["wait"] = (
            "local (acknowledge on commit) or replicated (once the replica holds the write); "
            "default: the setting write_ack"
        )
    params += [
        {"name": name, "in": "query", "required": False, "description": text, "schema": _STR}
        for name, text in query.items()
    ]
    ref = {"$ref": "#/components/schemas/" + op.answer}
    media = {"Text": "text/plain", "EventStream": "text/event-stream"}.get(
        op.answer, "application/json"
    )
    out: dict[str, Any] = {
        "summary": op.summary,
        "operationId": op.method.lower()
        + op.path.replace("/", "_").replace("{", "").replace("}", "").replace(".", "_"),
        "x-role": op.role,
        "parameters": params,
        "responses": {
            str(op.status): {"description": "success", "content": {media: {"schema": ref}}},
            "default": {
                "description": "error (see the error codes of docs/API.md)",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
        },
    }
    if op.role is not None:
        out["security"] = [{"bearer": []}]
    if op.body is not None:
        out["requestBody"] = {
            "required": op.body
            in ("ModelCreate", "VersionCreate", "AliasSet", "TokenCreate", "WebhookCreate"),
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/" + op.body}}
            },
        }
    return out


def _version() -> str:
    try:
        return package_version("modelreg")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0"


def document() -> dict[str, Any]:
    """The whole OpenAPI document."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "modelreg central",
            "version": _version(),
            "description": "The registry's REST API; errors: "
            + ", ".join(f"{code} ({HTTP_STATUS[code]})" for code in sorted(CODES)),
        },
        "paths": paths,
        "components": {
            "schemas": {**_SCHEMAS, **BODIES},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
