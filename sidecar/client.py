"""The client library serving code imports: ask this node's sidecar which model version to load.

Two classes with one behaviour, :class:`Client` (blocking sockets) and :class:`AsyncClient`
(asyncio), both speaking the socket protocol of ``docs/PROTOCOL.md``::

    from modelreg.sidecar.client import Client

    with Client("/run/modelreg/sidecar.sock") as reg:
        model = reg.resolve("fraud", "production")
        print(model.version, model.artifact_uri, model.sha256, model.age_ms)
        for changed in reg.watch("fraud", "production"):  # hot reload without a restart
            reload(changed)

How it fails, so serving code can decide what to do:

* The sidecar answered with an error frame: the same :mod:`modelreg.errors` class central would
  raise for that code (``ModelNotFound``, ``AliasNotFound``, ``NotReady``, ``Timeout`` …).
* The socket is missing, refuses connections or is busy (``ENOENT``, ``ECONNREFUSED``,
  ``EAGAIN``; a sidecar that is starting or restarting): retried with jittered exponential
  backoff until ``connect_deadline_s`` has passed, then :class:`modelreg.errors.Unavailable`.
* A ``resolve`` answered ``not_ready`` (the sidecar is loading its local copy at start, or has
  no copy yet): retried the same way until ``connect_deadline_s``, then ``NotReady`` — so a
  container that starts while its node's sidecar restarts waits a moment instead of failing.
* The sidecar went away mid-answer or did not answer within ``timeout_s``:
  :class:`~modelreg.errors.Unavailable`. Every operation is a read, so a request that failed on
  a reused connection (the sidecar restarted since) is sent once more on a fresh one.

One connection is opened on first use and reused by every call; a lock makes a :class:`Client`
safe to share between threads (calls are serialised), and a forked child (pre-fork servers)
opens its own connection instead of sharing its parent's. ``watch`` uses a connection of its
own.
Constructors do no I/O. The socket path defaults to :data:`DEFAULT_SOCKET_PATH`; reading
``REG_SOCKET`` is the entry point's business (the ``reg`` command does it), never this module's.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import socket
import struct
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Self

import msgpack

from modelreg.errors import InvalidRequest, NotReady, RegistryError, Unavailable, from_body
from modelreg.sidecar import config as sidecar_config
from modelreg.sidecar.protocol import MAX_RESPONSE_BYTES, encode_frame

__all__ = [
    "DEFAULT_CONNECT_DEADLINE_S",
    "DEFAULT_SOCKET_PATH",
    "DEFAULT_TIMEOUT_S",
    "AsyncClient",
    "Client",
    "Lineage",
    "ResolvedModel",
]

#: Where ``reg sidecar run`` listens by default (relative to the working directory).
DEFAULT_SOCKET_PATH = sidecar_config.DEFAULT_SOCKET_PATH
#: Seconds to wait for one answer (``wait_ms`` of a ``min_revision`` resolve comes on top).
DEFAULT_TIMEOUT_S = 5.0
#: Seconds to keep retrying a missing, refusing or busy socket before raising ``Unavailable``.
DEFAULT_CONNECT_DEADLINE_S = 5.0

#: errno values that mean "the sidecar is not there yet / is restarting / is busy": retried.
_RETRY_ERRNOS = frozenset({errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN, errno.EWOULDBLOCK})
#: First backoff delay and its cap, in seconds; each delay is jittered to 50-100 %.
_BACKOFF_FIRST_S = 0.005
_BACKOFF_CAP_S = 0.5
#: Backoff cap between ``watch`` reconnection attempts, in seconds.
_WATCH_BACKOFF_CAP_S = 1.0
#: Linux limit on a Unix socket path (``sun_path``), in bytes, including the final NUL.
_MAX_SOCKET_PATH_BYTES = 107

_HEADER = struct.Struct(">I")
_TIMEVAL = struct.Struct("@ll")  # struct timeval: seconds, microseconds


def _set_kernel_timeout(sock: socket.socket, seconds: float) -> None:
    """Receive and send timeouts enforced by the kernel (0: none); expiry is ``EAGAIN``."""
    whole = int(seconds)
    value = _TIMEVAL.pack(whole, int((seconds - whole) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


class _Garbled(Unavailable):
    """An answer that is not what the protocol says: the connection must not be reused."""


def _unpack(body: bytes | memoryview) -> dict[str, Any]:
    try:
        answer = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise _Garbled("the sidecar sent an answer that is not msgpack") from None
    if not isinstance(answer, dict):
        raise _Garbled("the sidecar sent an answer that is not a map")
    return answer


@dataclass(frozen=True)
class Lineage:
    """Where a version came from: training run, code commit, dataset, parent version."""

    run_id: str | None = None
    commit: str | None = None
    dataset_uri: str | None = None
    dataset_digest: str | None = None
    parent_version: int | None = None


_new = object.__new__
_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _frozen(value: Any) -> Mapping[str, Any]:
    """A read-only view of a freshly decoded map (nobody else holds it: no copy needed)."""
    return MappingProxyType(value) if isinstance(value, dict) else _EMPTY


@dataclass(frozen=True)
class ResolvedModel:
    """One resolved ``model@ref``: the version record and how fresh the answer was.

    ``revision`` is the registry revision the sidecar answered from and ``age_ms`` the age of
    its copy (time since central's last replicated heartbeat). ``raw`` is the version record
    exactly as sent (see ``central/records.py``), for fields this class does not name.
    """

    model: str
    version: int
    ref: str
    status: str
    artifact_uri: str
    sha256: str
    size: int | None
    format: str
    lineage: Lineage
    # Read-only views; left out of hash() (mappings are unhashable) but compared by ==.
    params: Mapping[str, Any] = field(hash=False)
    metrics: Mapping[str, Any] = field(hash=False)
    tags: Mapping[str, Any] = field(hash=False)
    aliases: tuple[str, ...]
    description: str
    created_by: str
    created_at: str
    revision: int
    age_ms: int
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_answer(cls, answer: Mapping[str, Any]) -> ResolvedModel:
        """Build from an ``ok`` answer frame; raises ``Unavailable`` if it is malformed."""
        record = answer.get("result")
        try:
            if not isinstance(record, dict):
                raise TypeError("result is not a map")
            artifact = record["artifact"]
            lineage = record.get("lineage") or {}
            size = artifact.get("size")
            lineage_obj = _new(Lineage)
            lineage_obj.__dict__.update(
                run_id=lineage.get("run_id"),
                commit=lineage.get("commit"),
                dataset_uri=lineage.get("dataset_uri"),
                dataset_digest=lineage.get("dataset_digest"),
                parent_version=lineage.get("parent_version"),
            )
            # A lookup's hot path: fill the frozen instance's __dict__ in one step instead of
            # 19 object.__setattr__ calls (a third of the client's time per resolve).
            obj = _new(cls)
            obj.__dict__.update(
                model=str(record["model"]),
                version=int(record["version"]),
                ref=str(record.get("ref", record["version"])),
                status=str(record["status"]),
                artifact_uri=str(artifact["uri"]),
                sha256=str(artifact["sha256"]),
                size=None if size is None else int(size),
                format=str(artifact.get("format") or ""),
                lineage=lineage_obj,
                params=_frozen(record.get("params")),
                metrics=_frozen(record.get("metrics")),
                tags=_frozen(record.get("tags")),
                aliases=tuple(record.get("aliases") or ()),
                description=str(record.get("description") or ""),
                created_by=str(record.get("created_by") or ""),
                created_at=str(record.get("created_at") or ""),
                revision=int(answer.get("revision") or 0),
                age_ms=int(answer.get("age_ms") or 0),
                raw=MappingProxyType(record),
            )
            return obj
        except (KeyError, TypeError, ValueError, AttributeError):
            raise _Garbled("the sidecar sent a resolve answer without a version record") from None


def _ok_answer(body: bytes | memoryview) -> dict[str, Any]:
    """The decoded answer if it is ``ok``; else raise the error class it carries."""
    answer = _unpack(body)
    if answer.get("ok") is not True:
        raise from_body(answer, 500)
    return answer


class _AnswerCache:
    """Decoded resolve answers by request frame, so asking the same ``model@ref`` again costs
    a byte comparison instead of a decode.

    The sidecar pre-encodes each answer and appends only ``age_ms`` per request
    (docs/ARCHITECTURE.md): an answer whose bytes equal the cached one's up to a trailing integer is
    the same record at the same revision with a new age. Anything else (a new revision, another
    layout, an error) is decoded in full. Bounded; emptied when full.
    """

    MAX_ENTRIES = 1024

    def __init__(self) -> None:
        self._items: dict[bytes, tuple[bytes, ResolvedModel]] = {}

    def record(self, frame: bytes, body: bytes | memoryview) -> ResolvedModel:
        """The record ``body`` answers to ``frame``; raises the error class of an error answer
        and ``Unavailable`` for one that is not msgpack."""
        hit = self._items.get(frame)
        if hit is not None:
            prefix, cached = hit
            cut = len(prefix)
            if 0 < len(body) - cut <= 9 and body[:cut] == prefix:
                try:
                    age = msgpack.unpackb(body[cut:])
                except (ValueError, msgpack.ExtraData, msgpack.FormatError):
                    age = None
                if type(age) is int:
                    fresh = _new(ResolvedModel)
                    fresh.__dict__.update(cached.__dict__)
                    fresh.__dict__["age_ms"] = age
                    return fresh
        answer = _ok_answer(body)
        record = ResolvedModel.from_answer(answer)
        age = answer.get("age_ms")
        if type(age) is int:
            tail = msgpack.packb(age)
            if bytes(body[-len(tail) :]) == tail:
                if len(self._items) >= self.MAX_ENTRIES:
                    self._items.clear()
                self._items[frame] = (bytes(body[: -len(tail)]), record)
        return record


def _result(answer: Mapping[str, Any]) -> Any:
    """The ``result`` of an answer, or raise the error class it carries."""
    if answer.get("ok") is True:
        return answer.get("result")
    raise from_body(answer, 500)


def _check_path(path: Path) -> str:
    text = str(path)
    if len(text.encode()) >= _MAX_SOCKET_PATH_BYTES:
        raise InvalidRequest(
            f"socket path is {len(text.encode())} bytes, longer than a Unix socket allows "
            f"({_MAX_SOCKET_PATH_BYTES - 1}): {text}",
            socket=text,
        )
    return text


#: Encoded plain resolve requests by (model, ref): serving code asks the same few again and
#: again. Bounded; emptied when full.
_FRAMES: dict[tuple[str, str], bytes] = {}
_FRAMES_MAX = 4096


def _resolve_request(
    model: str,
    ref: str | int,
    min_revision: int | None,
    wait_ms: int | None,
    revision_hash: str | None = None,
) -> bytes:
    """The encoded resolve request frame."""
    ref = str(ref)
    if min_revision is None and wait_ms is None and revision_hash is None:
        frame = _FRAMES.get((model, ref))
        if frame is None:
            if len(_FRAMES) >= _FRAMES_MAX:
                _FRAMES.clear()
            frame = encode_frame({"op": "resolve", "model": model, "ref": ref})
            _FRAMES[(model, ref)] = frame
        return frame
    request: dict[str, Any] = {"op": "resolve", "model": model, "ref": ref}
    if min_revision is not None:
        request["min_revision"] = min_revision
    if wait_ms is not None:
        request["wait_ms"] = wait_ms
    if revision_hash is not None:
        request["revision_hash"] = revision_hash
    return encode_frame(request)


class _Backoff:
    """Jittered exponential delays, never sleeping past ``deadline`` (a ``monotonic`` time)."""

    def __init__(self, deadline: float | None, cap_s: float = _BACKOFF_CAP_S) -> None:
        self.deadline = deadline
        self.cap_s = cap_s
        self.attempt = 0

    def next_delay(self) -> float | None:
        """Seconds to wait before the next attempt, or None when the deadline has passed."""
        delay: float = min(self.cap_s, _BACKOFF_FIRST_S * 2.0**self.attempt)
        delay *= random.uniform(0.5, 1.0)
        self.attempt += 1
        if self.deadline is None:
            return delay
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            return None
        return min(delay, remaining)

    def reset(self) -> None:
        self.attempt = 0


def _gave_up(down_since: float, deadline_s: float | None) -> bool:
    return deadline_s is not None and time.monotonic() - down_since >= deadline_s


def _unavailable(path: str, deadline_s: float, exc: OSError) -> Unavailable:
    reason = exc.strerror or type(exc).__name__
    return Unavailable(
        f"no sidecar answering on {path} after {deadline_s:g} s ({reason}); "
        "is `reg sidecar run` running with this --socket?",
        socket=path,
    )


def _is_retryable(exc: OSError) -> bool:
    return isinstance(exc, FileNotFoundError | ConnectionRefusedError | BlockingIOError) or (
        exc.errno in _RETRY_ERRNOS
    )


def _no_answer(path: Path, seconds: float) -> Unavailable:
    return Unavailable(
        f"the sidecar on {path} did not answer within {seconds:g} s", socket=str(path)
    )


def _lost(path: Path, exc: BaseException) -> RegistryError:
    """The error for a connection that broke mid-call: ``exc`` itself if it is one of ours."""
    if isinstance(exc, RegistryError):
        return exc
    reason = getattr(exc, "strerror", None) or type(exc).__name__
    return Unavailable(f"lost the connection to the sidecar on {path} ({reason})", socket=str(path))


class _Watching:
    """What a watch keeps across reconnections: the last record yielded, the backoff, and since
    when the sidecar has been unreachable (for ``reconnect_deadline_s``)."""

    def __init__(self, path: Path, deadline_s: float | None) -> None:
        self.path = path
        self.deadline_s = deadline_s
        self.last: Mapping[str, Any] | None = None
        self.backoff = _Backoff(None, _WATCH_BACKOFF_CAP_S)
        self.down_since: float | None = None

    def changed(self, body: bytes) -> ResolvedModel | None:
        """The record of a watch frame, or None when it repeats the last one yielded (a
        reconnection answers the current record again). Raises an error frame's class."""
        record = ResolvedModel.from_answer(_ok_answer(body))
        self.down_since = None
        self.backoff.reset()
        if self.last is not None and dict(record.raw) == dict(self.last):
            return None
        self.last = record.raw
        return record

    def lost(self, exc: BaseException) -> float:
        """Seconds to wait before reconnecting; raises once ``deadline_s`` has passed."""
        self.down_since = self.down_since or time.monotonic()
        if _gave_up(self.down_since, self.deadline_s):
            if isinstance(exc, RegistryError):
                raise exc
            raise Unavailable(
                f"lost the watch on {self.path} and could not get it back within "
                f"{self.deadline_s:g} s",
                socket=str(self.path),
            ) from None
        return self.backoff.next_delay() or 0.0


#: Every live Client, so that a forked child (pre-fork servers: gunicorn, uwsgi) starts with
#: fresh connections and locks instead of sharing its parent's socket.
_CLIENTS: weakref.WeakSet[Client] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client in list(_CLIENTS):
        client._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Client:
    """Blocking client for one sidecar socket; see the module docstring for how it fails.

    Example::

        with Client("/run/modelreg/sidecar.sock") as reg:
            reg.resolve("fraud", "production").version
    """

    def __init__(
        self,
        socket_path: str | Path = DEFAULT_SOCKET_PATH,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_deadline_s: float = DEFAULT_CONNECT_DEADLINE_S,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.timeout_s = timeout_s
        self.connect_deadline_s = connect_deadline_s
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._answers = _AnswerCache()
        self._lock = threading.Lock()
        self._generation = 0  # bumped by close(): running watches stop
        self._watch_socks: set[socket.socket] = set()
        _CLIENTS.add(self)

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the reused connection (a later call opens a new one) and end every running
        ``watch`` of this client (its loop returns). Safe to call from another thread."""
        with self._lock:
            self._drop()
        self._generation += 1
        for sock in list(self._watch_socks):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _forget_after_fork(self) -> None:
        """In a forked child: never touch the parent's connections, locks or watches."""
        self._lock = threading.Lock()
        if self._sock is not None:
            self._sock.close()  # the child's copy of the descriptor only
            self._sock = None
        self._buf.clear()
        self._generation += 1
        for sock in list(self._watch_socks):
            sock.close()
        self._watch_socks.clear()

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf.clear()

    # -- operations --------------------------------------------------------------------------

    def resolve(
        self,
        model: str,
        ref: str | int = "latest",
        min_revision: int | None = None,
        wait_ms: int | None = None,
        revision_hash: str | None = None,
    ) -> ResolvedModel:
        """Resolve ``model@ref`` (an alias, a version number or ``latest``).

        With ``min_revision`` the sidecar waits up to ``wait_ms`` for its copy to reach that
        revision (read-your-writes after a promotion) and raises ``Timeout`` otherwise. Pass
        the ``revision_hash`` central answered the write with, too: then a revision number
        issued again after a loss (another event) raises ``HistoryMismatch`` instead of
        answering from a history without the write.
        Raises ``ModelNotFound``, ``VersionNotFound``, ``AliasNotFound``, ``NotReady`` (still
        not ready after ``connect_deadline_s`` of retries), ``InvalidRequest`` or ``Unavailable``.
        """
        frame = _resolve_request(model, ref, min_revision, wait_ms, revision_hash)
        backoff: _Backoff | None = None
        while True:
            body = self._roundtrip(frame, (wait_ms or 0) / 1000)
            try:
                return self._answers.record(frame, body)
            except _Garbled:
                with self._lock:
                    self._drop()
                raise
            except NotReady:
                backoff = backoff or _Backoff(time.monotonic() + self.connect_deadline_s)
                delay = backoff.next_delay()
                if delay is None:
                    raise
                time.sleep(delay)

    def get(self, model: str) -> dict[str, Any]:
        """The model as the sidecar indexed it (aliases, latest). Raises ``ModelNotFound``."""
        return dict(_result(self._call({"op": "get", "model": model})))

    def list(self) -> Any:
        """Every model the sidecar indexed."""
        return _result(self._call({"op": "list"}))

    def status(self) -> dict[str, Any]:
        """The node view: revision, age_ms, stale, ready, follower, counters, uptime."""
        answer = self._call({"op": "status"})
        return dict(_result(answer))

    def ping(self) -> Any:
        """Round trip with no lookup; raises ``Unavailable`` when nobody answers."""
        return _result(self._call({"op": "ping"}))

    def watch(
        self, model: str, ref: str | int = "latest", *, reconnect_deadline_s: float | None = None
    ) -> Generator[ResolvedModel, None, None]:
        """Yield the current answer for ``model@ref``, then one record per change.

        If the sidecar goes away (restart, upgrade), reconnects with jittered backoff and goes
        on; an answer equal to the last one yielded is not repeated. ``reconnect_deadline_s``
        bounds how long to keep trying (None: for ever), then ``Unavailable``; ``NotReady``
        (a sidecar still restoring its first copy) is waited out the same way. Other error
        frames raise their class (``AliasNotFound`` for an alias that does not exist…). Close
        the generator, leave the ``for`` loop, or call :meth:`close` (from any thread) to end
        the watch and close its connection.
        """
        request = encode_frame({"op": "watch", "model": model, "ref": str(ref)})
        path = _check_path(self.socket_path)
        watching = _Watching(self.socket_path, reconnect_deadline_s)
        generation = self._generation
        while self._generation == generation:
            try:
                sock = self._connect(path)
            except Unavailable as exc:
                time.sleep(watching.lost(exc))
                continue
            self._watch_socks.add(sock)
            buf = bytearray()
            delay = 0.0
            try:
                _set_kernel_timeout(sock, 0.0)  # changes may be hours apart
                sock.sendall(request)
                while True:
                    record = watching.changed(self._read_frame(sock, buf))
                    if record is not None:
                        yield record
            except (OSError, Unavailable) as exc:
                if self._generation != generation:
                    return  # close() ended this watch
                delay = watching.lost(exc)
            finally:
                self._watch_socks.discard(sock)
                sock.close()
            time.sleep(delay)

    # -- transport ---------------------------------------------------------------------------

    def _call(self, request: Mapping[str, Any], extra_s: float = 0.0) -> dict[str, Any]:
        """Send ``request``, return the decoded ``ok`` answer or raise its error class."""
        body = self._roundtrip(encode_frame(request), extra_s)
        try:
            return _ok_answer(body)
        except _Garbled:
            with self._lock:
                self._drop()  # the stream cannot be trusted any more
            raise

    def _roundtrip(self, frame: bytes, extra_s: float = 0.0) -> bytes:
        """Send one request frame on the reused connection; return the answer frame's body."""
        with self._lock:
            for attempt in (1, 2):
                fresh = self._sock is None
                if self._sock is None:
                    self._sock = self._connect(_check_path(self.socket_path))
                sock = self._sock
                try:
                    if extra_s:
                        _set_kernel_timeout(sock, self.timeout_s + extra_s)
                    sock.sendall(frame)
                    body = self._read_frame(sock, self._buf)
                    if extra_s:
                        _set_kernel_timeout(sock, self.timeout_s)
                except (TimeoutError, BlockingIOError):
                    self._drop()
                    raise _no_answer(self.socket_path, self.timeout_s + extra_s) from None
                except (OSError, Unavailable) as exc:
                    self._drop()
                    if fresh or attempt == 2:
                        raise _lost(self.socket_path, exc) from None
                    continue
                except BaseException:
                    # Interrupted mid-request (Ctrl-C…): its answer must not be read as the
                    # answer to the next call on this connection.
                    self._drop()
                    raise
                return body
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self, path: str) -> socket.socket:
        """Connect, retrying a missing/refusing/busy socket until the deadline."""
        backoff = _Backoff(time.monotonic() + self.connect_deadline_s)
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.timeout_s)  # non-blocking connect: a full backlog is EAGAIN
                sock.connect(path)
                # Then a blocking socket with kernel timeouts: Python's own timeout would poll()
                # before every recv, one more system call per lookup.
                sock.settimeout(None)
                _set_kernel_timeout(sock, self.timeout_s)
                return sock
            except OSError as exc:
                sock.close()
                if not _is_retryable(exc):
                    raise Unavailable(
                        f"cannot connect to the sidecar on {path}: "
                        f"{exc.strerror or type(exc).__name__}",
                        socket=path,
                    ) from None
                delay = backoff.next_delay()
                if delay is None:
                    raise _unavailable(path, self.connect_deadline_s, exc) from None
                time.sleep(delay)

    @staticmethod
    def _read_frame(sock: socket.socket, buf: bytearray) -> bytes:
        """One frame's body from ``sock``; bytes beyond it stay in ``buf`` for the next call.

        A kernel receive timeout raises ``BlockingIOError``.
        """
        if not buf:  # the usual case: one recv holds exactly one answer
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionResetError(errno.ECONNRESET, "connection closed by the sidecar")
            if len(chunk) >= 4 and len(chunk) == 4 + _HEADER.unpack_from(chunk)[0]:
                return chunk[4:]  # a copy, but bytes compare and slice faster than a memoryview
            buf += chunk
        while True:
            if len(buf) >= 4:
                (size,) = _HEADER.unpack_from(buf)
                if size > MAX_RESPONSE_BYTES:
                    raise Unavailable(f"the sidecar sent a {size}-byte frame; refusing it")
                end = 4 + size
                if len(buf) >= end:
                    body = bytes(buf[4:end])
                    del buf[:end]
                    return body
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionResetError(errno.ECONNRESET, "connection closed by the sidecar")
            buf += chunk


class AsyncClient:
    """The asyncio twin of :class:`Client`: same operations, same errors, awaitable.

    Example::

        async with AsyncClient("/run/modelreg/sidecar.sock") as reg:
            model = await reg.resolve("fraud", "production")
            async for changed in reg.watch("fraud", "production"):
                await reload(changed)
    """

    def __init__(
        self,
        socket_path: str | Path = DEFAULT_SOCKET_PATH,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_deadline_s: float = DEFAULT_CONNECT_DEADLINE_S,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.timeout_s = timeout_s
        self.connect_deadline_s = connect_deadline_s
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock: asyncio.Lock | None = None
        self._answers = _AnswerCache()
        self._generation = 0  # bumped by aclose(): running watches stop
        self._watch_writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the reused connection (a later call opens a new one) and end every running
        ``watch`` of this client."""
        await self._drop()
        self._generation += 1
        for writer in list(self._watch_writers):
            writer.close()

    def _forget(self) -> None:
        """Close the reused connection without waiting (usable while being cancelled)."""
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None

    async def _drop(self) -> None:
        if self._conn is not None:
            writer = self._conn[1]
            self._conn = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def resolve(
        self,
        model: str,
        ref: str | int = "latest",
        min_revision: int | None = None,
        wait_ms: int | None = None,
        revision_hash: str | None = None,
    ) -> ResolvedModel:
        """See :meth:`Client.resolve`."""
        frame = _resolve_request(model, ref, min_revision, wait_ms, revision_hash)
        backoff: _Backoff | None = None
        while True:
            body = await self._roundtrip(frame, (wait_ms or 0) / 1000)
            try:
                return self._answers.record(frame, body)
            except _Garbled:
                await self._drop()
                raise
            except NotReady:
                backoff = backoff or _Backoff(time.monotonic() + self.connect_deadline_s)
                delay = backoff.next_delay()
                if delay is None:
                    raise
                await asyncio.sleep(delay)

    async def get(self, model: str) -> dict[str, Any]:
        """See :meth:`Client.get`."""
        return dict(_result(await self._call({"op": "get", "model": model})))

    async def list(self) -> Any:
        """See :meth:`Client.list`."""
        return _result(await self._call({"op": "list"}))

    async def status(self) -> dict[str, Any]:
        """See :meth:`Client.status`."""
        return dict(_result(await self._call({"op": "status"})))

    async def ping(self) -> Any:
        """See :meth:`Client.ping`."""
        return _result(await self._call({"op": "ping"}))

    async def watch(
        self, model: str, ref: str | int = "latest", *, reconnect_deadline_s: float | None = None
    ) -> AsyncGenerator[ResolvedModel, None]:
        """See :meth:`Client.watch`; :meth:`aclose` ends it."""
        request = encode_frame({"op": "watch", "model": model, "ref": str(ref)})
        path = _check_path(self.socket_path)
        watching = _Watching(self.socket_path, reconnect_deadline_s)
        generation = self._generation
        while self._generation == generation:
            try:
                reader, writer = await self._connect(path)
            except Unavailable as exc:
                await asyncio.sleep(watching.lost(exc))
                continue
            self._watch_writers.add(writer)
            delay = 0.0
            try:
                writer.write(request)
                await writer.drain()
                while True:
                    record = watching.changed(await self._read_frame(reader))
                    if record is not None:
                        yield record
            except (OSError, asyncio.IncompleteReadError, Unavailable) as exc:
                if self._generation != generation:
                    return  # aclose() ended this watch
                delay = watching.lost(exc)
            finally:
                self._watch_writers.discard(writer)
                writer.close()
            await asyncio.sleep(delay)

    async def _call(self, request: Mapping[str, Any], extra_s: float = 0.0) -> dict[str, Any]:
        """See :meth:`Client._call`."""
        body = await self._roundtrip(encode_frame(request), extra_s)
        try:
            return _ok_answer(body)
        except _Garbled:
            await self._drop()
            raise

    async def _roundtrip(self, frame: bytes, extra_s: float = 0.0) -> bytes:
        """See :meth:`Client._roundtrip`."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            for attempt in (1, 2):
                fresh = self._conn is None
                if self._conn is None:
                    self._conn = await self._connect(_check_path(self.socket_path))
                reader, writer = self._conn
                try:
                    writer.write(frame)
                    await writer.drain()
                    async with asyncio.timeout(self.timeout_s + extra_s):
                        body = await self._read_frame(reader)
                except TimeoutError:
                    await self._drop()
                    raise _no_answer(self.socket_path, self.timeout_s + extra_s) from None
                except (OSError, asyncio.IncompleteReadError, Unavailable) as exc:
                    await self._drop()
                    if fresh or attempt == 2:
                        raise _lost(self.socket_path, exc) from None
                    continue
                except BaseException:
                    # Cancelled mid-request: its answer must not be read as the answer to the
                    # next call on this connection.
                    self._forget()
                    raise
                return body
        raise AssertionError("unreachable")  # pragma: no cover

    async def _connect(self, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        backoff = _Backoff(time.monotonic() + self.connect_deadline_s)
        while True:
            try:
                async with asyncio.timeout(self.timeout_s):
                    return await asyncio.open_unix_connection(path, limit=MAX_RESPONSE_BYTES)
            except TimeoutError:
                raise Unavailable(
                    f"the sidecar on {path} did not accept within {self.timeout_s:g} s",
                    socket=path,
                ) from None
            except OSError as exc:
                if not _is_retryable(exc):
                    raise Unavailable(
                        f"cannot connect to the sidecar on {path}: "
                        f"{exc.strerror or type(exc).__name__}",
                        socket=path,
                    ) from None
                delay = backoff.next_delay()
                if delay is None:
                    raise _unavailable(path, self.connect_deadline_s, exc) from None
                await asyncio.sleep(delay)

    @staticmethod
    async def _read_frame(reader: asyncio.StreamReader) -> bytes:
        (size,) = _HEADER.unpack(await reader.readexactly(4))
        if size > MAX_RESPONSE_BYTES:
            raise Unavailable(f"the sidecar sent a {size}-byte frame; refusing it")
        return await reader.readexactly(size)
