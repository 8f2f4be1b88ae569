"""What a sidecar knows right now, and how it answers a request from it.

:class:`Node` holds the current :class:`~modelreg.sidecar.index.Index` (swapped atomically by the
follower), the replicated heartbeat, the follower's status, the watchers and the callers waiting
for a revision. Both front ends (the msgpack socket in :mod:`modelreg.sidecar.server` and JSON/HTTP
in :mod:`modelreg.sidecar.http`) answer through :meth:`Node.answer`, so they give the same answers.

Every answer is a complete msgpack frame (bytes); :meth:`Node.answer` never blocks. A request
with ``min_revision`` above the current revision gets an :class:`asyncio.Future` instead,
resolved with the frame when the revision arrives or ``wait_ms`` passes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack

from modelreg.errors import HistoryMismatch, InvalidField, NotReady, Timeout
from modelreg.sidecar.index import HASH_WINDOW, Index, hash_prefix
from modelreg.sidecar.metrics import Metrics
from modelreg.sidecar.protocol import Request, error_frame, ok_frame, ok_prefix, pack, result_of

if TYPE_CHECKING:
    from modelreg.sidecar.history import History

__all__ = ["Answer", "Node", "Watcher", "decode_frame"]

#: A frame, or a future frame (a request waiting for ``min_revision``).
Answer = bytes | asyncio.Future[bytes]
#: Called with each frame a watch produces; it must not block.
Watcher = Callable[[bytes], None]

_PING = pack("pong")


class Node:
    """The sidecar's state. Only the event loop thread calls its methods."""

    def __init__(self, metrics: Metrics, stale_after_s: float, describe_source: str = "") -> None:
        self.metrics = metrics
        self.stale_after_ms = int(stale_after_s * 1000)
        self.index: Index | None = None
        #: Replicated heartbeat time in epoch ms (refreshed without a reload).
        self.heartbeat_ms: int | None = None
        #: Why there is no index yet (reported by not_ready answers and /healthz).
        self.not_ready_reason = "no local copy yet: the follower is restoring " + describe_source
        #: Filled in by the follower: state, pid, restarts, error, path.
        self.follower: dict[str, Any] = {"state": "starting", "pid": None, "restarts": 0}
        #: Set by the follower: the served history and any other one seen (status "diverged").
        self.history: History | None = None
        self.connections = 0
        self.started = time.time()
        self._started_mono = time.monotonic()
        self._watchers: dict[tuple[str, str], dict[int, tuple[Watcher, Any]]] = {}
        self._waiters: list[tuple[int, asyncio.Future[bytes], Request]] = []
        self._age_cache_ms = -1
        self._age_cache = b""

    # -- freshness ---------------------------------------------------------------------------

    def age_ms(self) -> int | None:
        """Milliseconds since the replicated heartbeat (clamped at 0); None without one."""
        beat = self.heartbeat_ms
        if beat is None:
            return None
        return max(0, int(time.time() * 1000) - beat)

    def stale(self) -> bool:
        """True when the heartbeat is older than ``stale_after`` (or there is none)."""
        age = self.age_ms()
        return age is None or age > self.stale_after_ms

    def packed_age(self) -> bytes:
        """``age_ms`` msgpack-encoded (nil without a heartbeat), cached per millisecond."""
        age = self.age_ms()
        if age is None:
            return b"\xc0"  # nil
        if age != self._age_cache_ms:
            self._age_cache_ms = age
            self._age_cache = pack(age)
        return self._age_cache

    # -- changes from the follower -------------------------------------------------------------

    def swap(self, index: Index) -> None:
        """Make ``index`` current, wake revision waiters and push changed answers to watchers."""
        old = self.index
        self.index = index
        if index.heartbeat_ms is not None and (
            self.heartbeat_ms is None or index.heartbeat_ms > self.heartbeat_ms
        ):
            self.heartbeat_ms = index.heartbeat_ms
        self.not_ready_reason = ""
        if self._waiters:
            still = []
            for min_revision, future, request in self._waiters:
                if future.done():
                    continue
                if _reached(index, request):
                    future.set_result(self._checked(index, request))
                else:
                    still.append((min_revision, future, request))
            self._waiters = still
        for key, watchers in list(self._watchers.items()):
            if _signature(old, key) == _signature(index, key):
                continue
            for watcher, rid in list(watchers.values()):
                watcher(self.resolve_frame(key[0], key[1], rid))

    def set_heartbeat(self, heartbeat_ms: int | None) -> None:
        """A newer replicated heartbeat without a new revision: only the age changes."""
        if heartbeat_ms is not None and (
            self.heartbeat_ms is None or heartbeat_ms > self.heartbeat_ms
        ):
            self.heartbeat_ms = heartbeat_ms

    # -- answers -------------------------------------------------------------------------------

    def resolve_frame(self, model: str, ref: str, rid: Any) -> bytes:
        """The resolve answer for ``model@ref`` now (an error frame when it does not exist)."""
        index = self.index
        if index is None:
            return error_frame(NotReady(self.not_ready_reason), rid)
        entry = index.resolve.get((model, ref))
        if entry is None and ref.isascii() and ref.isdigit() and ref != str(int(ref)):
            entry = index.resolve.get((model, str(int(ref))))
        if entry is None:
            return error_frame(index.not_found(model, ref), rid)
        return ok_frame(entry + index.tail, self.packed_age(), rid)

    def answer_now(self, request: Request) -> bytes:
        """The answer to ``request`` from the current index, ignoring ``min_revision``."""
        op = request.op
        if op == "resolve":
            assert request.model is not None and request.ref is not None
            return self.resolve_frame(request.model, request.ref, request.id)
        if op == "ping":
            return ok_frame(self._prefix(_PING), self.packed_age(), request.id)
        if op == "status":
            return ok_frame(self._prefix(pack(self.status())), self.packed_age(), request.id)
        index = self.index
        if index is None:
            return error_frame(NotReady(self.not_ready_reason), request.id)
        if op == "get":
            assert request.model is not None
            entry = index.get.get(request.model)
            if entry is None:
                return error_frame(index.not_found(request.model), request.id)
            return ok_frame(entry + index.tail, self.packed_age(), request.id)
        if op == "list":
            return ok_frame(index.list_entry + index.tail, self.packed_age(), request.id)
        raise AssertionError(f"unhandled op {op!r}")

    def answer(self, request: Request) -> Answer:
        """The answer to ``request``: a frame, or a future frame when it waits for a revision."""
        min_revision = request.min_revision
        if min_revision is not None and request.op == "resolve":
            index = self.index
            if index is None or not _reached(index, request):
                return self._wait(min_revision, request)
            return self._checked(index, request)
        return self.answer_now(request)

    def _checked(self, index: Index, request: Request) -> bytes:
        """The answer to a ``min_revision`` resolve whose revision ``index`` reached: with a
        ``revision_hash``, an error unless ``index``'s history holds that very event there."""
        wanted, revision = request.revision_hash, request.min_revision
        if wanted is not None and revision is not None and revision > 0:
            served = index.hashes.get(revision)
            if served is None:
                return error_frame(
                    InvalidField(
                        f"revision {revision} is older than the {HASH_WINDOW} newest revisions "
                        f"whose events this sidecar can check (it is at {index.revision}); "
                        "resolve without revision_hash",
                        field="revision_hash",
                    ),
                    request.id,
                )
            if served != hash_prefix(wanted):
                return error_frame(
                    HistoryMismatch(
                        f"revision {revision} of the history this node serves is another event "
                        f"than the one asked for: that revision number was issued again after "
                        f"a loss, the write with hash {wanted[:12]}… is not in this history",
                        min_revision=revision,
                        revision_hash=wanted,
                        actual_prefix=served.hex(),
                        revision=index.revision,
                    ),
                    request.id,
                )
        return self.answer_now(request)

    def _prefix(self, result_packed: bytes) -> bytes:
        revision = self.index.revision if self.index is not None else 0
        return ok_prefix(result_packed, revision)

    def _wait(self, min_revision: int, request: Request) -> Answer:
        def timeout_frame() -> bytes:
            current = self.index.revision if self.index is not None else None
            return error_frame(
                Timeout(
                    f"revision {min_revision} not reached within {request.wait_ms} ms",
                    min_revision=min_revision,
                    revision=current,
                ),
                request.id,
            )

        if request.wait_ms <= 0:
            return timeout_frame()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()

        def expire() -> None:
            if not future.done():
                future.set_result(timeout_frame())

        handle = loop.call_later(request.wait_ms / 1000, expire)
        future.add_done_callback(lambda _: handle.cancel())
        self._waiters.append((min_revision, future, request))
        return future

    # -- watches -------------------------------------------------------------------------------

    def watch(self, model: str, ref: str, rid: Any, token: int, watcher: Watcher) -> bytes:
        """Register ``watcher`` for changes of ``model@ref``; return the current answer.

        ``token`` identifies the registration (one per connection and watch) for
        :meth:`unwatch`. The watcher receives a frame each time the answer changes (including
        to or from an error such as ``alias_not_found``).
        """
        key = (model, ref)
        self._watchers.setdefault(key, {})[token] = (watcher, rid)
        return self.resolve_frame(model, ref, rid)

    def unwatch(self, model: str, ref: str, token: int) -> None:
        """Drop one registration made by :meth:`watch` (no error if it is gone)."""
        key = (model, ref)
        watchers = self._watchers.get(key)
        if watchers is not None:
            watchers.pop(token, None)
            if not watchers:
                del self._watchers[key]

    @property
    def watches(self) -> int:
        """Active watch registrations."""
        return sum(len(w) for w in self._watchers.values())

    # -- status --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The ``status`` result (see docs/PROTOCOL.md)."""
        index = self.index
        follower = {k: self.follower.get(k) for k in ("state", "pid", "restarts")}
        return {
            "revision": index.revision if index is not None else None,
            "age_ms": self.age_ms(),
            "stale": self.stale(),
            "ready": index is not None,
            "reason": self.not_ready_reason if index is None else "",
            "follower": {**follower, "error": self.follower.get("error")},
            "diverged": self.history.status(index) if self.history is not None else None,
            "models": index.models if index is not None else 0,
            "versions": index.versions if index is not None else 0,
            "connections": self.connections,
            "watches": self.watches,
            "lookups": self.metrics.total,
            "errors": self.metrics.errors,
            "uptime_s": round(time.monotonic() - self._started_mono, 3),
            "loaded_at": index.loaded_at if index is not None else None,
            "index_load_ms": round(index.load_ms, 3) if index is not None else None,
        }


def _reached(index: Index, request: Request) -> bool:
    """Whether ``index`` can answer a ``min_revision`` resolve: at or past the revision, and,
    with a ``revision_hash``, holding the hashes up to it (a saved index loaded at a cold start
    has none until the first load of its copy)."""
    wanted = request.min_revision or 0
    if index.revision < wanted:
        return False
    if request.revision_hash is None or wanted == 0:
        return True
    return index.hashes.last >= wanted


def _signature(index: Index | None, key: tuple[str, str]) -> bytes | str | None:
    """What a watcher of ``key`` would see, minus revision and age: changes trigger a push."""
    if index is None:
        return None
    entry = index.resolve.get(key)
    return result_of(entry) if entry is not None else index.not_found(*key).code


def decode_frame(frame: bytes) -> Any:
    """The value inside one complete frame (for the JSON front end and tests)."""
    return msgpack.unpackb(frame[4:], raw=False, strict_map_key=False)
