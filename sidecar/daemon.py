"""``reg sidecar run`` wired together: node, follower, socket server and HTTP server.

Start order: both sockets are bound first, so a client never finds no socket (``ENOENT``);
the msgpack socket answers ``not_ready`` (saying what it waits for) while the newest local copy
loads, then serves it (fail static). Only then are the HTTP server and the follower started:
they import aiohttp and ``modelreg.central.replication`` (~0.3 s), in a worker thread, while lookups
are already answered; the HTTP socket's early connections wait in its listen backlog. With no
local copy, ``not_ready`` lasts until the first restore completes.
"""

from __future__ import annotations

import asyncio
import importlib
import signal
import socket
import sys
from collections.abc import Callable, Mapping

from modelreg.sidecar.config import SidecarConfig
from modelreg.sidecar.follower import Follower
from modelreg.sidecar.metrics import Metrics
from modelreg.sidecar.server import SocketServer, bind_unix_socket
from modelreg.sidecar.state import Node

__all__ = ["run"]

_SWITCH_INTERVAL_S = 0.0005


def _gauges(metrics: Metrics, node: Node) -> None:
    def revision() -> float:
        return float(node.index.revision) if node.index is not None else -1.0

    def age_s() -> float:
        age = node.age_ms()
        return age / 1000 if age is not None else -1.0

    def versions() -> float:
        return float(node.index.versions) if node.index is not None else 0.0

    def models() -> float:
        return float(node.index.models) if node.index is not None else 0.0

    metrics.gauges.update(
        {
            "reg_sidecar_revision": revision,
            "reg_sidecar_age_seconds": age_s,
            "reg_sidecar_stale": lambda: float(node.stale()),
            "reg_sidecar_ready": lambda: float(node.index is not None),
            "reg_sidecar_connections": lambda: float(node.connections),
            "reg_sidecar_watches": lambda: float(node.watches),
            "reg_sidecar_models": models,
            "reg_sidecar_versions": versions,
            "reg_sidecar_follower_restarts": lambda: float(node.follower.get("restarts") or 0),
        }
    )


async def run(
    config: SidecarConfig,
    environ: Mapping[str, str],
    announce: Callable[[str], None] = print,
) -> None:
    """Serve until SIGTERM or SIGINT, then stop everything and return.

    Raises :class:`modelreg.sidecar.server.SocketInUse` before serving anything, and
    :class:`modelreg.sidecar.follower.LitestreamMissing` once the local copy is loaded (the sockets
    are closed and removed again).
    """
    # A full index load runs in a worker thread: a short GIL switch interval bounds how long a
    # lookup can wait behind it (default 5 ms).
    sys.setswitchinterval(_SWITCH_INTERVAL_S)
    metrics = Metrics()
    # The base URL, not config.follow_url: that imports modelreg.central.replication (and aiohttp)
    node = Node(metrics, config.stale_after_s, describe_source=config.source_url)
    _gauges(metrics, node)
    follower = Follower(config, node, metrics, environ)
    history = follower.history
    metrics.describe(
        "modelreg_sidecar_diverged",
        "gauge",
        "1 while the replica holds a history that does not extend the served one.",
        lambda: float(history.diverged),
    )
    metrics.describe(
        "modelreg_sidecar_divergences_total",
        "counter",
        "Times the replica was found holding another history than the served one.",
        lambda: float(history.divergences),
    )
    metrics.describe(
        "modelreg_sidecar_follower_errors_total",
        "counter",
        "Error lines logged by the litestream children (a corrupt or missing replica file...).",
        lambda: float(metrics.follower_errors),
    )
    metrics.describe(
        "modelreg_sidecar_adoptions_total",
        "counter",
        "Other histories adopted (reg sidecar adopt, or the diverged grace).",
        lambda: float(history.adoptions),
    )
    sock_server = SocketServer(
        node,
        metrics,
        config.socket,
        mode=config.socket_mode,
        max_connections=config.max_connections,
        idle_timeout_s=config.idle_timeout_s,
        frame_timeout_s=config.frame_timeout_s,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    http_sock: socket.socket | None = None
    http = None
    try:
        await sock_server.start()
        if config.http_socket is not None:
            http_sock = bind_unix_socket(config.http_socket, config.socket_mode)
        await follower.load_local()  # answering not_ready meanwhile
        if not stop.is_set():  # SIGTERM during the load: stop without starting the rest
            http_module = await asyncio.to_thread(importlib.import_module, "modelreg.sidecar.http")
            http = http_module.HttpServer(
                node, metrics, config.http_socket, config.http_port, config.socket_mode
            )
            await http.start(http_sock)
            http_sock = None  # the HTTP server owns it now
            await follower.start()
            where = [f"socket {config.socket}"]
            if config.http_socket is not None:
                where.append(f"http {config.http_socket}")
            if http.bound_port is not None:
                where.append(f"http://127.0.0.1:{http.bound_port}")
            state = f"revision {node.index.revision}" if node.index is not None else "no copy yet"
            follows = config.follow_url
            announce(f"sidecar serving on {', '.join(where)}; following {follows} ({state})")
            await stop.wait()
    finally:
        try:
            if http is not None:
                await http.stop()
            elif http_sock is not None:
                http_sock.close()
                if config.http_socket is not None:
                    config.http_socket.unlink(missing_ok=True)
        finally:
            try:
                await sock_server.stop()
            finally:
                await follower.stop()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
