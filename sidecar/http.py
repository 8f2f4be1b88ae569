"""The sidecar's answers as JSON over HTTP, on a Unix socket and optionally loopback TCP.

Routes (all GET)::

    /v1/resolve/{model}/{ref}   ?min_revision=N&wait_ms=M&revision_hash=H   the resolve op
    /v1/models/{model}                                      the get op
    /v1/models                                              the list op
    /v1/status                                              the status op
    /healthz                    200 when ready, 503 with the reason when not
    /metrics                    Prometheus text

Bodies are the socket protocol's answers encoded as JSON (``{"ok": true, "result", "revision",
"age_ms"}`` or ``{"ok": false, "error": {...}}``), with the HTTP status of the error code from
:mod:`modelreg.errors`. The answers come from the same :class:`~modelreg.sidecar.state.Node`, so
both front ends always agree.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from modelreg.errors import (
    HTTP_STATUS,
    InvalidField,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    RegistryError,
    error_body,
)
from modelreg.sidecar.metrics import Metrics
from modelreg.sidecar.protocol import parse_request
from modelreg.sidecar.server import bind_unix_socket
from modelreg.sidecar.state import Node, decode_frame

__all__ = ["HttpServer", "create_app"]

_NODE = web.AppKey("node", Node)
_METRICS = web.AppKey("metrics", Metrics)
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(answer: Any) -> web.Response:
    status = 200
    if not answer.get("ok"):
        status = HTTP_STATUS.get(str(answer["error"].get("code")), 500)
    return web.Response(
        text=json.dumps(answer, ensure_ascii=False, default=_bytes_hex),
        status=status,
        content_type="application/json",
    )


def _bytes_hex(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(type(value).__name__)


def _error(exc: RegistryError) -> web.Response:
    return _json({"ok": False, **error_body(exc)})


async def _answer(request: web.Request, raw: dict[str, Any]) -> web.Response:
    node = request.app[_NODE]
    metrics = request.app[_METRICS]
    started = time.perf_counter_ns()
    op = str(raw["op"])
    try:
        parsed = parse_request(raw)
    except RegistryError as exc:
        metrics.observe("http_" + op, exc.code, time.perf_counter_ns() - started)
        return _error(exc)
    answer = node.answer(parsed)
    frame = answer if isinstance(answer, bytes) else await answer
    decoded = decode_frame(frame)
    code = "ok" if decoded.get("ok") else str(decoded["error"]["code"])
    metrics.observe("http_" + op, code, time.perf_counter_ns() - started)
    return _json(decoded)


def _query_int(request: web.Request, name: str) -> int | None:
    text = request.query.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidField(f"{name} must be an integer", field=name) from None


async def resolve(request: web.Request) -> web.Response:
    raw: dict[str, Any] = {
        "op": "resolve",
        "model": request.match_info["model"],
        "ref": request.match_info["ref"],
    }
    try:
        for name in ("min_revision", "wait_ms"):
            value = _query_int(request, name)
            if value is not None:
                raw[name] = value
    except RegistryError as exc:
        return _error(exc)
    if "revision_hash" in request.query:
        raw["revision_hash"] = request.query["revision_hash"]
    return await _answer(request, raw)


async def get_model(request: web.Request) -> web.Response:
    return await _answer(request, {"op": "get", "model": request.match_info["model"]})


async def list_models(request: web.Request) -> web.Response:
    return await _answer(request, {"op": "list"})


async def status(request: web.Request) -> web.Response:
    return await _answer(request, {"op": "status"})


async def healthz(request: web.Request) -> web.Response:
    node = request.app[_NODE]
    ready = node.index is not None
    body = {
        "ready": ready,
        "reason": "" if ready else node.not_ready_reason,
        "stale": node.stale(),
        "revision": node.index.revision if node.index is not None else None,
        "age_ms": node.age_ms(),
        "follower": {k: node.follower.get(k) for k in ("state", "pid", "restarts", "error")},
    }
    if ready and body["stale"]:
        body["reason"] = f"serving a copy whose heartbeat is {node.age_ms()} ms old"
    return web.json_response(body, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        text=request.app[_METRICS].render(), content_type="text/plain", charset="utf-8"
    )


@web.middleware
async def _errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Unknown routes and methods answer the JSON error body, never HTML or a traceback."""
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed:
        return _error(MethodNotAllowed(f"{request.method} is not allowed on {request.path}"))
    except web.HTTPNotFound:
        return _error(NotFound(f"no route {request.path}"))
    except web.HTTPException as exc:
        return _error(InvalidRequest(exc.reason))


def create_app(node: Node, metrics_: Metrics) -> web.Application:
    """The JSON/HTTP application over ``node``."""
    app = web.Application(middlewares=[_errors], client_max_size=64 * 1024)
    app[_NODE] = node
    app[_METRICS] = metrics_
    app.router.add_get("/v1/resolve/{model}/{ref}", resolve)
    app.router.add_get("/v1/models/{model}", get_model)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


class HttpServer:
    """Serves :func:`create_app` on a Unix socket and/or ``127.0.0.1:port``."""

    def __init__(
        self,
        node: Node,
        metrics_: Metrics,
        socket_path: Path | None,
        port: int | None,
        mode: int = 0o660,
    ) -> None:
        self.node = node
        self.metrics = metrics_
        self.socket_path = socket_path
        self.port = port
        self.mode = mode
        self._runner: web.AppRunner | None = None
        #: The bound TCP port (useful with port 0), once started.
        self.bound_port: int | None = None

    async def start(self, sock: socket.socket | None = None) -> None:
        """Bind and serve (on ``sock`` when given: the Unix socket bound beforehand by
        :func:`modelreg.sidecar.server.bind_unix_socket`). Raises
        :class:`modelreg.sidecar.server.SocketInUse` or ``OSError``."""
        self._runner = web.AppRunner(
            create_app(self.node, self.metrics), access_log=None, handle_signals=False
        )
        await self._runner.setup()
        if self.socket_path is not None:
            if sock is None:
                sock = bind_unix_socket(self.socket_path, self.mode)
            await web.SockSite(self._runner, sock).start()
        if self.port is not None:
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            await site.start()
            for address in self._runner.addresses:
                if isinstance(address, tuple):
                    self.bound_port = int(address[1])

    async def stop(self) -> None:
        """Close the sites and remove the Unix socket file."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            if self.socket_path is not None:
                self.socket_path.unlink(missing_ok=True)
