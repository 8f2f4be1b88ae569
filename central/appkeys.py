"""Typed keys of central's ``web.Application``, in a module of their own so that every part
(the HTTP handlers, the replication contexts, the heartbeat) can import them without cycles."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from modelreg.central.config import CentralConfig

if TYPE_CHECKING:
    from modelreg.central.auth import Auth
    from modelreg.central.registry import Registry
    from modelreg.central.replication import Replicator

__all__ = ["AUTH", "CONFIG", "REGISTRY", "REPLICATOR"]

CONFIG = web.AppKey("config", CentralConfig)
REGISTRY: web.AppKey[Registry] = web.AppKey("registry")
AUTH: web.AppKey[Auth] = web.AppKey("auth")
#: Present only while replication runs (config.replica_url is not None).
REPLICATOR: web.AppKey[Replicator] = web.AppKey("replicator")
