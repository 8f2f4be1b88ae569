"""``reg sidecar run`` wired together: node, follower, socket server and HTTP server.

Start order matters for fail-static: the newest local copy is loaded *before* the sockets are
bound, so a client that connects never gets ``not_ready`` from a node that has a copy; with no
copy the sockets come up at once and answer ``not_ready`` until the first restore completes.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Mapping

from sidecar.config import SidecarConfig
from sidecar.follower import Follower
from sidecar.http import HttpServer
from sidecar.metrics import Metrics
from sidecar.server import SocketServer
from sidecar.state import Node

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

    Raises ``central.replication.ReplicationError`` (litestream missing) or
    :class:`sidecar.server.SocketInUse` before serving anything.
    """
    # A full index load runs in a worker thread: a short GIL switch interval bounds how long a
    # lookup can wait behind it (default 5 ms).
    sys.setswitchinterval(_SWITCH_INTERVAL_S)
    metrics = Metrics()
    node = Node(metrics, config.stale_after_s, describe_source=config.follow_url)
    _gauges(metrics, node)
    follower = Follower(config, node, metrics, environ)
    sock_server = SocketServer(
        node,
        metrics,
        config.socket,
        mode=config.socket_mode,
        max_connections=config.max_connections,
        idle_timeout_s=config.idle_timeout_s,
        frame_timeout_s=config.frame_timeout_s,
    )
    http = HttpServer(node, metrics, config.http_socket, config.http_port, config.socket_mode)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await follower.start()
    try:
        await sock_server.start()
        try:
            await http.start()
            try:
                where = [f"socket {config.socket}"]
                if config.http_socket is not None:
                    where.append(f"http {config.http_socket}")
                if http.bound_port is not None:
                    where.append(f"http://127.0.0.1:{http.bound_port}")
                state = (
                    f"revision {node.index.revision}" if node.index is not None else "no copy yet"
                )
                announce(
                    f"sidecar serving on {', '.join(where)}; following {config.follow_url}"
                    f" ({state})"
                )
                await stop.wait()
            finally:
                await http.stop()
        finally:
            await sock_server.stop()
    finally:
        await follower.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
