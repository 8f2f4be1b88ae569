"""Webhook delivery: one worker per enabled subscription, reading the event log in order.

The event log is the outbox (``central/feed.py``). A subscription's backlog is not a queue but
its position, ``cursor``: every event up to it is done. Its worker reads the events after the
cursor that match the subscription's filter, sends them one at a time in revision order, and
moves the cursor past each once the receiver answered 2xx (``central/delivery_log.py`` records
the cursor and every attempt). So:

* **at least once, in order**: an event is sent again until it is acknowledged, and the next
  one waits for it; after a restart (even kill -9) the worker resumes after the last cursor it
  recorded, so an event committed is delivered, at worst twice;
* **retries**: exponential backoff with jitter (``webhook_retry_initial_s``, doubling, at most
  :data:`MAX_RETRY_INTERVAL_S` apart, honouring ``Retry-After``) for ``webhook_retry_for_s``
  (24 h by default); then the subscription is disabled with a ``webhook.disable`` event by
  ``central``. A ``410 Gone`` answer disables it at once (the Standard Webhooks rule);
* **isolation**: each worker has one request in flight and its own timeout
  (``webhook_timeout_s``, connect to last byte); a slow, failing or blackholed receiver holds
  only its own worker. Writes never wait for a worker: the store's commit listener only sets
  each worker's wake-up flag, and a worker that fell behind reads the log in chunks instead of
  holding events in memory;
* **safety** (``central/targets.py``): every connection's addresses are checked by
  :class:`~modelreg.central.targets.GuardedResolver` (IP hosts here, before each attempt); no
  redirect is followed (a 3xx is a failure); at most :data:`READ_LIMIT_BYTES` of an answer are
  read, and the connection is dropped when more was sent; no environment proxy is used
  (``central/webhook_http.py``, the small HTTP client that sends them).

Bodies are the Standard Webhooks shape ``{"type", "timestamp", "data": <event>}``, signed by
``central/signature.py``; ``webhook-id`` is ``<subscription id>_<revision>``, the same for every
attempt and redelivery of one event.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import json
import logging
import random
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from yarl import URL

from modelreg import __version__
from modelreg.central.config import CentralConfig
from modelreg.central.delivery_log import EXCERPT_CHARS, Attempt, Delivery, DeliveryLog
from modelreg.central.feed import EventFeed, FeedEvent
from modelreg.central.records import TIME_FORMAT, now, parse_time
from modelreg.central.signature import headers as signed_headers
from modelreg.central.store import Store
from modelreg.central.targets import GuardedResolver, refusal
from modelreg.central.webhook_http import DeliveryHTTPError, PostClient
from modelreg.central.webhooks import Subscription, Subscriptions
from modelreg.errors import DeliveryNotFound

__all__ = [
    "MAX_RETRY_INTERVAL_S",
    "READ_LIMIT_BYTES",
    "Dispatcher",
    "backoff",
]

log = logging.getLogger(__name__)

#: Longest wait between two attempts of one delivery, in seconds.
MAX_RETRY_INTERVAL_S = 3600.0
#: Bytes of an answer read at most (the rest is never read: the connection is dropped).
READ_LIMIT_BYTES = 16 * 1024
#: Events a worker takes from the feed at a time.
BATCH_EVENTS = 64
#: Seconds between two copies of every position into secrets.db (``checkpoint``).
CHECKPOINT_INTERVAL_S = 30.0
#: Seconds after which an idle worker looks at the log again anyway (the checkpoint tick).
IDLE_WAIT_S = 30.0
#: Longest wait for the connection alone, in seconds (within ``webhook_timeout_s``).
CONNECT_TIMEOUT_S = 5.0


def backoff(attempts: int, initial_s: float, retry_after_s: float | None = None) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: ``initial_s`` doubled per
    attempt, at most :data:`MAX_RETRY_INTERVAL_S`, times a random 0.5-1.0 (jitter: receivers
    that failed together are not retried together); never less than ``retry_after_s``."""
    delay = min(MAX_RETRY_INTERVAL_S, initial_s * 2.0 ** max(0, attempts - 1))
    delay *= random.uniform(0.5, 1.0)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, MAX_RETRY_INTERVAL_S))
    return delay


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())


def _later(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime(TIME_FORMAT)


@functools.lru_cache(maxsize=1024)
def _url(url: str) -> URL:
    """A subscription's URL, parsed once."""
    return URL(url)


@functools.lru_cache(maxsize=1024)
def _ip_refusal(url: str, allow_private: bool) -> str | None:
    """The refusal of a URL whose host is an IP (aiohttp resolves no IP host); None for a
    name (the resolver checks what it resolves to) or an allowed IP."""
    host = URL(url).host or ""
    why = refusal(host, allow_private)
    return None if why is not None and why.endswith("is not an IP address") else why


class _Worker:
    """Delivers one subscription's events in order. Created and stopped by the dispatcher."""

    def __init__(
        self, dispatcher: Dispatcher, sub: Subscription, cursor: int, pending: Delivery | None
    ) -> None:
        self.dispatcher = dispatcher
        self.sub = sub
        self.cursor = cursor
        #: The delivery being retried (the head of the line), if any.
        self.current = pending if pending is not None and pending.revision is not None else None
        #: Set at each commit: there may be new events.
        self.wake = asyncio.Event()
        #: Set to end a retry's wait early: redelivered, changed, stopping.
        self.poke = asyncio.Event()
        self.stopping = False
        self.state = "idle"
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name=f"webhook-{self.sub.id}")

    def stop(self) -> None:
        self.stopping = True
        self.poke.set()
        self.wake.set()

    async def _run(self) -> None:
        try:
            await self._loop()
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not end deliveries silently: log, pause, go on
            log.exception("webhook %s worker failed; restarting it", self.sub.id)
            await asyncio.sleep(1.0)
            if not self.stopping:
                self.dispatcher.restart(self)
        finally:
            self.state = "stopped" if self.stopping else self.state

    async def _loop(self) -> None:
        feed = self.dispatcher.feed
        while not self.stopping:
            if self.current is not None and self.current.revision is not None:
                event = await feed.get(self.current.revision)
                if event is None:  # not in the log: nothing to resend
                    self.current = None
                    continue
                if not await self._deliver(event):
                    return
                continue
            self.wake.clear()
            batch = await feed.read(self.cursor, BATCH_EVENTS, self.sub.filter)
            generation = self.sub
            for event in batch.items:
                if self.stopping or self.sub is not generation:
                    break  # the filter may have changed: read again from the cursor
                if not await self._deliver(event):
                    return
            else:
                if batch.last > self.cursor:
                    self._advance(batch.last)
            if not batch.more and not batch.items and not self.stopping:
                self.state = "idle"
                # No timeout of its own (a timer per wait costs more than the delivery around
                # it): commits set this, and the dispatcher sets it every IDLE_WAIT_S anyway.
                await self.wake.wait()

    def _advance(self, revision: int) -> None:
        self.cursor = revision
        self.dispatcher.log.advance(self.sub.id, revision)

    async def _deliver(self, event: FeedEvent) -> bool:
        """Send ``event`` until acknowledged (True) or the subscription is disabled or the
        worker stops (False)."""
        delivery = self.current
        if delivery is None or delivery.revision != event.revision:
            at = now()
            delivery = Delivery(
                id=self.dispatcher.log.new_id(),
                subscription=self.sub.id,
                revision=event.revision,
                action=event.action,
                message_id=f"{self.sub.id}_{event.revision}",
                kind="event",
                created_at=at,
                updated_at=at,
            )
            self.current = delivery
        elif delivery.next_attempt_at is not None and not self.stopping:
            wait = (parse_time(delivery.next_attempt_at) - datetime.now(UTC)).total_seconds()
            if wait > 0:  # resumed after a restart: keep to the schedule
                self.state = "retrying"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.poke.wait(), wait)
                self.poke.clear()
        while not self.stopping:
            sub = self.sub
            if not sub.filter.matches(event):  # the filter changed while it was being retried
                self._finish(delivery, "failed", None)
                self._advance(event.revision)
                return True
            self.state = "delivering"
            attempt, retry_after = await self.dispatcher.attempt(sub, delivery, event.payload)
            if attempt.ok:
                self._finish(delivery, "delivered", attempt)
                self._advance(event.revision)
                return True
            give_up = self._give_up(delivery, attempt)
            if give_up is not None:
                self._finish(delivery, "failed", attempt)
                self.stopping = True
                await self.dispatcher.disable(sub, give_up)
                return False
            delay = backoff(
                delivery.attempts, self.dispatcher.config.webhook_retry_initial_s, retry_after
            )
            delay = min(delay, self._window_left(delivery))
            delivery.state, delivery.next_attempt_at = "pending", _later(delay)
            self.dispatcher.log.save(delivery, attempt)
            self.state = "retrying"
            self.poke.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.poke.wait(), delay)
        return False

    def _window_left(self, delivery: Delivery) -> float:
        started = parse_time(delivery.created_at)
        window = timedelta(seconds=self.dispatcher.config.webhook_retry_for_s)
        return max(0.0, (started + window - datetime.now(UTC)).total_seconds())

    def _give_up(self, delivery: Delivery, attempt: Attempt) -> str | None:
        what = f"revision {delivery.revision}"
        if attempt.status == 410:
            return f"the receiver answered 410 Gone to {what}"
        if self._window_left(delivery) <= 0:
            hours = self.dispatcher.config.webhook_retry_for_s / 3600
            return (
                f"{what} was not delivered in {delivery.attempts} attempts over {hours:g} h;"
                f" last: {attempt.error or attempt.status}"
            )
        return None

    def _finish(self, delivery: Delivery, state: str, attempt: Attempt | None) -> None:
        delivery.state, delivery.next_attempt_at = state, None
        self.dispatcher.log.save(delivery, attempt)
        self.current = None

    def status(self) -> dict[str, Any]:
        current = self.current
        return {
            "state": "disabled" if not self.sub.enabled else self.state,
            "cursor": self.cursor,
            "backlog": max(0, self.dispatcher.feed.head - self.cursor),
            "retrying": None if current is None else current.record(),
        }


class Dispatcher:
    """Runs the webhook workers of one central; answers tests, redeliveries and status.

    Lifecycle: ``await open()`` after the registry, the subscriptions and the delivery log are
    open; ``await close()`` before they close. No I/O in the constructor.
    """

    def __init__(
        self,
        config: CentralConfig,
        store: Store,
        feed: EventFeed,
        subscriptions: Subscriptions,
        delivery_log: DeliveryLog,
    ) -> None:
        self.config = config
        self.feed = feed
        self.subscriptions = subscriptions
        self.log = delivery_log
        self._workers: dict[str, _Worker] = {}
        self._client: PostClient | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self._counts: dict[str, int] = {"delivered": 0, "failed": 0, "refused": 0}
        store.add_listener(self._committed)
        subscriptions.add_listener(self._changed)

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Start a worker per enabled subscription, after its recorded position."""
        timeout = self.config.webhook_timeout_s
        # Resolves (and checks) names again for every new connection: no DNS cache.
        self._client = PostClient(
            GuardedResolver(self.config.webhook_allow_private),
            f"modelreg-webhooks/{__version__}",
            connect_timeout_s=min(timeout, CONNECT_TIMEOUT_S),
        )
        for sub in self.subscriptions.all():
            if sub.enabled:
                self._start(sub)
        self._checkpointer = asyncio.create_task(self._checkpoint_loop(), name="checkpoints")

    async def close(self) -> None:
        """Stop every worker (an event in flight is sent again after a restart), record the
        positions, close the client."""
        workers = list(self._workers.values())
        self._workers.clear()
        for worker in workers:
            worker.stop()
            if worker.task is not None:
                worker.task.cancel()
        tasks = [w.task for w in workers if w.task is not None]
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            tasks.append(self._checkpointer)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._checkpoint({w.sub.id: w.cursor for w in workers})
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _start(self, sub: Subscription) -> None:
        cursor = max(self.log.cursors.get(sub.id, -1), sub.checkpoint)
        pending = self.log.pending.pop(sub.id, None)
        if pending is not None and (pending.revision or 0) <= cursor:
            pending = None
        worker = _Worker(self, sub, cursor, pending)
        self._workers[sub.id] = worker
        worker.start()

    def restart(self, worker: _Worker) -> None:
        """Start ``worker``'s subscription afresh from its position (after a failure)."""
        if self._workers.get(worker.sub.id) is worker:
            fresh = _Worker(self, worker.sub, worker.cursor, worker.current)
            self._workers[worker.sub.id] = fresh
            fresh.start()

    def _committed(self, events: list[dict[str, Any]]) -> None:
        """The store's listener: wake every worker (never more than setting a flag)."""
        for worker in self._workers.values():
            worker.wake.set()

    def _changed(self, sub: Subscription | None, webhook: str) -> None:
        worker = self._workers.get(webhook)
        if sub is None or not sub.enabled:
            if worker is not None:
                self._workers.pop(webhook, None)
                worker.stop()
                self.log.cursors[webhook] = worker.cursor
                if worker.current is not None:
                    self.log.pending[webhook] = worker.current
            if sub is None:
                self.log.forget(webhook)
                self.log.cursors.pop(webhook, None)
                self.log.pending.pop(webhook, None)
            return
        if worker is None:
            if self._client is not None:
                self._start(sub)
            return
        worker.sub = sub
        worker.poke.set()
        worker.wake.set()

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(min(CHECKPOINT_INTERVAL_S, IDLE_WAIT_S))
            await self._checkpoint({w.sub.id: w.cursor for w in self._workers.values()})
            for worker in self._workers.values():
                worker.wake.set()  # idle workers look at the log again, commits or not

    async def _checkpoint(self, positions: dict[str, int]) -> None:
        try:
            await self.subscriptions.checkpoint(positions)
        except Exception:  # informative copy only: the exact position is in deliveries.db
            log.exception("recording webhook checkpoints failed")

    async def disable(self, sub: Subscription, reason: str) -> None:
        """Disable ``sub`` with a ``webhook.disable`` event (retried until the log takes it)."""
        while True:
            try:
                await self.subscriptions.disable(sub.id, reason)
                return
            except Exception:
                log.exception("disabling webhook %s failed; retrying", sub.id)
                await asyncio.sleep(1.0)

    # -- sending -----------------------------------------------------------------------------

    async def attempt(
        self, sub: Subscription, delivery: Delivery, body: bytes
    ) -> tuple[Attempt, float | None]:
        """One signed POST of ``body`` for ``delivery`` (its attempt count and ``last`` move on;
        the caller saves it to the log with its new state); the attempt, and the seconds a 429
        or 503 answer's ``Retry-After`` asks for."""
        delivery.attempts += 1
        # a fresh delivery was stamped an instant ago: one clock read less per event
        at = delivery.updated_at if delivery.attempts == 1 and delivery.updated_at else now()
        started = time.perf_counter()
        status: int | None = None
        excerpt, error, retry_after = "", "", None
        why = _ip_refusal(sub.url, self.config.webhook_allow_private)
        if why is not None:
            error = f"refused: {why}"
            self._counts["refused"] += 1
        elif self._client is None:
            error = "central is stopping"
        else:
            headers = signed_headers(
                sub.signing_secrets(at), delivery.message_id, int(time.time()), body
            )
            headers["Content-Type"] = "application/json"
            try:
                answer = await self._client.post(
                    _url(sub.url), headers, body, self.config.webhook_timeout_s, READ_LIMIT_BYTES
                )
            except TimeoutError:
                error = f"no answer within {self.config.webhook_timeout_s:g} s"
            except DeliveryHTTPError as exc:
                error = str(exc)[:500]
                if "refused:" in error:
                    self._counts["refused"] += 1
            else:
                status = answer.status
                text = answer.body[: EXCERPT_CHARS * 4].decode("utf-8", "replace")
                excerpt, retry_after = text[:EXCERPT_CHARS], answer.headers.get("retry-after")
            if status is not None and not 200 <= status < 300:
                error = f"HTTP {status}"
                if 300 <= status < 400:
                    error += " (redirects are not followed: update the webhook's url)"
        elapsed = time.perf_counter() - started
        attempt = Attempt(delivery.attempts, at, status, elapsed * 1000.0, excerpt, error)
        self._counts["delivered" if attempt.ok else "failed"] += 1
        delivery.last = attempt
        delivery.updated_at = at if elapsed < 0.001 else now()
        wait = _retry_after(retry_after) if status in (429, 503) else None
        return attempt, wait

    # -- the API's questions -----------------------------------------------------------------

    def status(self, sub: Subscription) -> dict[str, Any]:
        """Where ``sub``'s deliveries stand: ``{"state", "cursor", "backlog", "retrying"}``."""
        worker = self._workers.get(sub.id)
        if worker is None:
            cursor = max(self.log.cursors.get(sub.id, -1), sub.checkpoint)
            pending = self.log.pending.get(sub.id)
            return {
                "state": "disabled" if not sub.enabled else "stopped",
                "cursor": cursor,
                "backlog": max(0, self.feed.head - cursor),
                "retrying": None if pending is None else pending.record(),
            }
        return worker.status()

    async def test(self, sub: Subscription) -> dict[str, Any]:
        """Send one signed ``webhook.test`` ping to ``sub`` now; the delivery with its attempt.
        Not an event: nothing in the log changes."""
        at = now()
        message_id = "test_" + secrets.token_hex(8)
        body = json.dumps(
            {
                "type": "webhook.test",
                "timestamp": at,
                "data": {"webhook": sub.id, "message": "a test delivery from modelreg"},
            },
            separators=(",", ":"),
        ).encode()
        delivery = Delivery(
            self.log.new_id(),
            sub.id,
            None,
            "webhook.test",
            message_id,
            "test",
            created_at=at,
            updated_at=at,
        )
        attempt, _ = await self.attempt(sub, delivery, body)
        delivery.state = "delivered" if attempt.ok else "failed"
        self.log.save(delivery, attempt)
        return delivery.record()

    async def redeliver(self, sub: Subscription, delivery_id: int) -> dict[str, Any]:
        """Send the message of one delivery again now (same ``webhook-id``, a fresh timestamp
        and signature): one attempt, recorded as a new delivery. A delivery being retried is
        also retried now. Raises :class:`DeliveryNotFound`, :class:`Unavailable`."""
        original = await self.log.get(sub.id, delivery_id)
        at = now()
        delivery = Delivery(
            self.log.new_id(),
            sub.id,
            original["revision"],
            original["action"],
            original["message_id"],
            "redelivery",
            created_at=at,
            updated_at=at,
            redelivery_of=delivery_id,
        )
        if original["kind"] == "test" or original["revision"] is None:
            return await self.test(sub)
        event = await self.feed.get(int(original["revision"]))
        if event is None:
            raise DeliveryNotFound(
                f"revision {original['revision']} is no longer in the event log",
                webhook=sub.id,
                delivery=delivery_id,
            )
        attempt, _ = await self.attempt(sub, delivery, event.payload)
        delivery.state = "delivered" if attempt.ok else "failed"
        self.log.save(delivery, attempt)
        worker = self._workers.get(sub.id)
        if worker is not None and worker.current is not None:
            worker.poke.set()  # "retry now" for the delivery at the head of the line
        return delivery.record()

    def metrics_text(self, prefix: str) -> str:
        """Prometheus series of the deliveries (``central/metrics.py`` adds them)."""
        out = [
            f"# HELP {prefix}webhook_attempts_total Webhook delivery attempts, by outcome.",
            f"# TYPE {prefix}webhook_attempts_total counter",
        ]
        for outcome in ("delivered", "failed", "refused"):
            count = self._counts[outcome]
            out.append(f'{prefix}webhook_attempts_total{{outcome="{outcome}"}} {count}')
        out += [
            f"# HELP {prefix}webhook_backlog Events after a webhook's position (not all match).",
            f"# TYPE {prefix}webhook_backlog gauge",
        ]
        for webhook, worker in sorted(self._workers.items()):
            backlog = max(0, self.feed.head - worker.cursor)
            out.append(f'{prefix}webhook_backlog{{webhook="{webhook}"}} {backlog}')
        retrying = sum(1 for w in self._workers.values() if w.current is not None)
        out += [
            f"# HELP {prefix}webhook_retrying Webhooks whose oldest delivery is being retried.",
            f"# TYPE {prefix}webhook_retrying gauge",
            f"{prefix}webhook_retrying {retrying}",
        ]
        return "\n".join(out) + "\n"
