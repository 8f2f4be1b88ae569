"""Typed keys of central's ``web.Application``, in a module of their own so that every part
(the HTTP handlers, the replication contexts, the heartbeat) can import them without cycles."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from modelreg.central.config import CentralConfig

if TYPE_CHECKING:
    from modelreg.central.auth import Auth
    from modelreg.central.delivery import Dispatcher
    from modelreg.central.delivery_log import DeliveryLog
    from modelreg.central.feed import EventFeed
    from modelreg.central.lease import Lease
    from modelreg.central.registry import Registry
    from modelreg.central.replica_check import ReplicaMonitor
    from modelreg.central.replication import Replicator
    from modelreg.central.webhooks import Subscriptions

__all__ = [
    "AUTH",
    "CONFIG",
    "DELIVERY_LOG",
    "DISPATCHER",
    "FEED",
    "LEASE",
    "MONITOR",
    "REGISTRY",
    "REPLICATOR",
    "WEBHOOKS",
]

CONFIG = web.AppKey("config", CentralConfig)
REGISTRY: web.AppKey[Registry] = web.AppKey("registry")
AUTH: web.AppKey[Auth] = web.AppKey("auth")
#: Present only while replication runs (config.replica_url is not None).
REPLICATOR: web.AppKey[Replicator] = web.AppKey("replicator")
#: The committed events, for the long-poll, the stream and the webhooks.
FEED: web.AppKey[EventFeed] = web.AppKey("feed")
#: Webhook subscriptions (secrets.db), their delivery log (deliveries.db) and the workers.
WEBHOOKS: web.AppKey[Subscriptions] = web.AppKey("webhooks")
DELIVERY_LOG: web.AppKey[DeliveryLog] = web.AppKey("delivery_log")
DISPATCHER: web.AppKey[Dispatcher] = web.AppKey("dispatcher")
#: The writer lock of the replica path, while central holds it (replicated centrals only).
LEASE: web.AppKey[Lease] = web.AppKey("replica_lease")
#: The replica's watchdog (central/replica_check.py), while replication runs.
MONITOR: web.AppKey[ReplicaMonitor] = web.AppKey("replica_monitor")
