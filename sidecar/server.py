"""The msgpack socket server: an asyncio ``Protocol`` per connection on a Unix socket.

The lookup path is: feed bytes to the connection's :class:`~modelreg.sidecar.protocol.FrameDecoder`,
validate each request, one dict access in the current index, a few bytes appended (age, id),
and one ``transport.write`` per batch of pipelined requests. Answers leave in request order; a
request waiting for ``min_revision`` holds back the answers behind it on that connection only.

Defences (docs/ARCHITECTURE.md, "Storm-ready"): listen backlog :data:`BACKLOG`; request frames above
``MAX_REQUEST_BYTES`` close the connection after an error frame; a connection limit; a sweep
closes connections idle for ``idle_timeout_s`` (watchers exempt) or holding a partial frame for
``frame_timeout_s``; a client that does not read its answers is paused, and closed when its
unread output passes :data:`MAX_UNREAD_BYTES`; per connection at most :data:`MAX_WATCHES`
watches and :data:`MAX_HELD_ANSWERS` answers held behind a waiting request.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import os
import socket
import stat
import struct
import time
from collections import deque
from pathlib import Path
from typing import Any, cast

import msgpack

from modelreg.errors import InvalidRequest, PayloadTooLarge, RegistryError, Unavailable
from modelreg.sidecar.metrics import Metrics
from modelreg.sidecar.protocol import (
    MAX_REQUEST_BYTES,
    FrameDecoder,
    FrameError,
    FrameTooLarge,
    decode_payload,
    error_frame,
    ok_frame,
    parse_request,
    request_id,
)
from modelreg.sidecar.state import Answer, Node

__all__ = [
    "BACKLOG",
    "MAX_HELD_ANSWERS",
    "MAX_UNREAD_BYTES",
    "MAX_WATCHES",
    "SocketInUse",
    "SocketServer",
    "bind_unix_socket",
]

log = logging.getLogger(__name__)

#: listen(2) backlog of the sockets; the kernel caps it at net.core.somaxconn.
BACKLOG = 8192
#: Unread answer bytes a connection may accumulate before it is closed (slow reader).
MAX_UNREAD_BYTES = 8 * 1024 * 1024
#: Watches one connection may hold; more are answered bad_request.
MAX_WATCHES = 256
#: Answers one connection may have held back behind a request waiting for ``min_revision``;
#: one more closes the connection (after an ``unavailable`` frame).
MAX_HELD_ANSWERS = 4096
#: Seconds between sweeps for idle connections and stalled partial frames.
_SWEEP_S = 1.0
_tokens = itertools.count(1)
_EMPTY: dict[tuple[str, str], bytes] = {}
_LEN = struct.Struct(">I").pack
_INT_MIN = -(2**63)
#: Most distinct request payloads remembered for the fast path (then forgotten at once).
_KNOWN_MAX = 16384
_UINT_MAX = 2**64 - 1


class SocketInUse(Exception):
    """The socket path is held by a live server, or is not a socket (never deleted)."""


def bind_unix_socket(path: Path, mode: int) -> socket.socket:
    """A listening Unix socket at ``path`` with permission bits ``mode``.

    Creates the parent directory (0750) if missing. A stale socket file left by a dead process
    is replaced; raises :class:`SocketInUse` when a live server answers on ``path`` or when the
    path exists and is not a socket (it is never deleted).
    """
    if not path.parent.exists():
        path.parent.mkdir(mode=0o750, parents=True)
    try:
        info = path.lstat()
    except FileNotFoundError:
        info = None
    if info is not None:
        if not stat.S_ISSOCK(info.st_mode):
            raise SocketInUse(f"{path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(0.5)
            probe.connect(str(path))
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                raise SocketInUse(f"{path} is in use ({exc.strerror})") from None
            path.unlink(missing_ok=True)  # stale: nobody listens
        else:
            raise SocketInUse(f"another process is serving on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, mode)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_decoder",
        "_queue",
        "_watches",
        "frame_started",
        "last_active",
        "server",
        "transport",
    )

    def __init__(self, server: SocketServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self._decoder = FrameDecoder(MAX_REQUEST_BYTES)
        # answers held back behind a request that waits for a revision
        self._queue: deque[Answer] | None = None
        self._watches: list[tuple[str, str, int]] = []
        #: perf_counter_ns of the last data, and of the first byte of an incomplete frame.
        self.last_active = time.perf_counter_ns()
        self.frame_started: int | None = None

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        self.transport = cast(asyncio.Transport, transport)
        transport = self.transport
        server = self.server
        server.metrics.connections_total += 1
        if len(server.connections) >= server.max_connections:
            server.metrics.connections_rejected += 1
            transport.write(error_frame(Unavailable("too many connections; retry with backoff")))
            transport.close()
            return
        server.connections.add(self)
        server.node.connections = len(server.connections)

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        server.connections.discard(self)
        server.node.connections = len(server.connections)
        for model, ref, token in self._watches:
            server.node.unwatch(model, ref, token)
        self._watches.clear()
        if self._queue:
            for item in self._queue:
                if isinstance(item, asyncio.Future):
                    item.cancel()
            self._queue = None

    def pause_writing(self) -> None:
        # The client is not reading its answers: stop reading its requests until it does.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        server = self.server
        # Fastest path (a sequential client, a storm connection): this read is exactly one
        # frame seen before as a plain resolve, with nothing buffered or held back: one dict
        # access on the bytes as received, one lookup, one write.
        hit = server.known_frames.get(data)
        if hit is not None and self._queue is None and not self._decoder.pending:
            node = server.node
            index = node.index
            entry = index.resolve.get(hit[0]) if index is not None else None
            if entry is not None and index is not None:
                started = time.perf_counter_ns()
                self.last_active = started
                if hit[1] is None:
                    body = entry + index.tail + node.packed_age()
                    self._flush([_LEN(len(body) + 1) + b"\x84" + body])
                else:
                    self._flush([ok_frame(entry, index.tail + node.packed_age(), hit[1])])
                server.metrics.observe_many("resolve", "ok", 1, time.perf_counter_ns() - started)
                return
        perf = time.perf_counter_ns
        started = perf()
        self.last_active = started
        decoder = self._decoder
        known = server.known_requests
        node = server.node
        index = node.index
        resolve = index.resolve if index is not None else _EMPTY
        tail = index.tail if index is not None else b""
        suffix = b""  # revision pair + age pair, the same for every answer of this batch
        out: list[bytes] = []
        fast = 0
        for payload in decoder.payloads(data):
            # Fast path, the lookup storm: a plain resolve that hits. Its payload was seen
            # (and validated) before, so it is answered without even decoding it.
            hit = known.get(payload) if self._queue is None else None
            if hit is None and type(payload) is bytes and self._queue is None:
                hit = _plain_resolve(payload)
                if hit is not None:
                    if len(known) >= _KNOWN_MAX:
                        known.clear()
                    known[payload] = hit
            if (
                hit is not None
                and len(data) == len(payload) + 4  # type: ignore[arg-type]
                and data not in server.known_frames
                and data == _LEN(len(payload)) + payload  # type: ignore[arg-type, operator]
            ):
                frames = server.known_frames
                if len(frames) >= _KNOWN_MAX:
                    frames.clear()
                frames[data] = hit
            if hit is not None:
                entry = resolve.get(hit[0])
                if entry is not None:
                    if not suffix:
                        suffix = tail + node.packed_age()
                    if hit[1] is None:
                        body = entry + suffix
                        out.append(_LEN(len(body) + 1) + b"\x84" + body)
                    else:
                        out.append(ok_frame(entry, suffix, hit[1]))
                    fast += 1
                    continue
            obj = payload if isinstance(payload, FrameTooLarge) else decode_payload(payload)
            if not self._slow(obj, out):
                return
        if fast:
            server.metrics.observe_many("resolve", "ok", fast, (perf() - started) // fast)
        self._flush(out)
        if decoder.pending:
            self.frame_started = self.frame_started or started
        else:
            self.frame_started = None

    def _slow(self, obj: Any, out: list[bytes]) -> bool:
        """Answer one decoded value the general way; False when the connection was closed."""
        started = time.perf_counter_ns()
        observe = self.server.metrics.observe
        if isinstance(obj, FrameError):
            if isinstance(obj, FrameTooLarge):
                self._flush(out)
                self._fatal(PayloadTooLarge(str(obj), limit=obj.limit))
                return False
            self._emit(out, error_frame(InvalidRequest(str(obj))))
            observe("invalid", InvalidRequest.code, time.perf_counter_ns() - started)
            return True
        try:
            request = parse_request(obj)
        except RegistryError as exc:
            self._emit(out, error_frame(exc, request_id(obj)))
            observe("invalid", exc.code, time.perf_counter_ns() - started)
            return True
        node = self.server.node
        if self._queue is not None and len(self._queue) >= MAX_HELD_ANSWERS:
            # pipelining behind a waiting request without bound: memory, not service
            self._flush(out)
            self._fatal(
                Unavailable(
                    f"more than {MAX_HELD_ANSWERS} answers held behind a waiting request",
                    limit=MAX_HELD_ANSWERS,
                )
            )
            return False
        if request.op == "watch" and len(self._watches) >= MAX_WATCHES:
            refused = InvalidRequest(
                f"at most {MAX_WATCHES} watches per connection", limit=MAX_WATCHES
            )
            self._emit(out, error_frame(refused, request.id))
            observe("watch", refused.code, time.perf_counter_ns() - started)
            return True
        answer: Answer
        try:
            if request.op == "watch":
                assert request.model is not None and request.ref is not None
                token = next(_tokens)
                self._watches.append((request.model, request.ref, token))
                answer = node.watch(request.model, request.ref, request.id, token, self._push)
            else:
                answer = node.answer(request)
        except Exception:  # a bug must cost one answer, never the connection or the process
            log.exception("answering %r failed", request)
            answer = error_frame(RegistryError("internal error"), request.id)
        self._emit(out, answer)
        if isinstance(answer, bytes):
            observe(request.op, _result_code(answer), time.perf_counter_ns() - started)
        return True

    # -- output ------------------------------------------------------------------------------

    def _emit(self, out: list[bytes], answer: Answer) -> None:
        if self._queue is not None:
            self._queue.append(answer)
        elif isinstance(answer, bytes):
            out.append(answer)
        else:
            self._queue = deque([answer])
            answer.add_done_callback(self._drain)

    def _flush(self, out: list[bytes]) -> None:
        transport = self.transport
        if not out or transport is None or transport.is_closing():
            return
        transport.write(out[0] if len(out) == 1 else b"".join(out))
        if transport.get_write_buffer_size() > MAX_UNREAD_BYTES:
            transport.abort()

    def _drain(self, _: object = None) -> None:
        """Write the held-back answers that are ready, in order."""
        queue = self._queue
        if queue is None:
            return
        out: list[bytes] = []
        while queue:
            head = queue[0]
            if isinstance(head, bytes):
                out.append(head)
                queue.popleft()
                continue
            if not head.done():
                head.add_done_callback(self._drain)
                break
            queue.popleft()
            if not head.cancelled():
                frame = head.result()
                out.append(frame)
                self.server.metrics.observe("resolve", _result_code(frame), 0)
        if not queue:
            self._queue = None
        self._flush(out)

    def _push(self, frame: bytes) -> None:
        """A watch frame: sent now, or after the answers held back on this connection."""
        out: list[bytes] = []
        self._emit(out, frame)
        self._flush(out)

    def _fatal(self, exc: RegistryError) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(error_frame(exc))
            transport.close()
        self.server.metrics.observe("invalid", exc.code, 0)

    def expire(self, now: int, idle_s: float, frame_s: float) -> None:
        """Close the connection when a partial frame or idleness has lasted too long.

        ``now`` is ``time.perf_counter_ns()``."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.frame_started is not None and now - self.frame_started > frame_s * 1e9 > 0:
            transport.abort()
        elif (
            idle_s > 0
            and not self._watches
            and self._queue is None
            and now - self.last_active > idle_s * 1e9
        ):
            transport.close()


def _plain_resolve(payload: bytes) -> tuple[tuple[str, str], Any] | None:
    """``((model, ref), id)`` when ``payload`` is a plain resolve: exactly the keys op, model,
    ref (str) and optionally an int or short str id. Such a request's answer depends only on
    the index, so it may take the fast path; anything else returns None (the full path)."""
    obj = decode_payload(payload)
    if type(obj) is not dict or obj.get("op") != "resolve":
        return None
    model = obj.get("model")
    ref = obj.get("ref")
    rid = obj.get("id")
    if type(model) is not str or type(ref) is not str or not 0 < len(model) <= 256:
        return None
    if not 0 < len(ref) <= 256:
        return None
    if rid is None:
        return ((model, ref), None) if len(obj) == 3 else None
    if len(obj) == 4 and (
        (type(rid) is int and _INT_MIN <= rid <= _UINT_MAX) or (type(rid) is str and len(rid) <= 64)
    ):
        return ((model, ref), rid)
    return None


def _result_code(frame: bytes) -> str:
    # frame = length(4) + map header(1) + "ok" key (3 bytes: a2 6f 6b) + true/false
    if frame[8] == 0xC3:
        return "ok"
    # error frames are rare: decode for the code
    answer: dict[str, Any] = msgpack.unpackb(frame[4:], raw=False, strict_map_key=False)
    return str(answer["error"]["code"])


class SocketServer:
    """The msgpack protocol on a Unix socket. ``start()`` binds; ``stop()`` closes everything."""

    def __init__(
        self,
        node: Node,
        metrics: Metrics,
        path: Path,
        *,
        mode: int = 0o660,
        max_connections: int = 16384,
        idle_timeout_s: float = 300.0,
        frame_timeout_s: float = 10.0,
    ) -> None:
        self.node = node
        self.metrics = metrics
        self.path = path
        self.mode = mode
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.frame_timeout_s = frame_timeout_s
        self.connections: set[_Connection] = set()
        #: Payloads of plain resolves seen before -> ((model, ref), id): a repeated request is
        #: answered without decoding it.
        self.known_requests: dict[object, tuple[tuple[str, str], Any]] = {}
        #: The same for whole frames (length prefix included) that arrived alone in one read.
        self.known_frames: dict[bytes, tuple[tuple[str, str], Any]] = {}
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind the socket and start serving. Raises :class:`SocketInUse`."""
        sock = bind_unix_socket(self.path, self.mode)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(
            lambda: _Connection(self), sock=sock, backlog=BACKLOG
        )
        self._sweeper = asyncio.create_task(self._sweep())

    async def stop(self) -> None:
        """Stop accepting, close every connection, remove the socket file."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._server is not None:
            self._server.close()
            for conn in list(self.connections):
                if conn.transport is not None:
                    conn.transport.abort()
            await self._server.wait_closed()
            self._server = None
            self.path.unlink(missing_ok=True)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_S)
            now = time.perf_counter_ns()
            for conn in list(self.connections):
                conn.expire(now, self.idle_timeout_s, self.frame_timeout_s)
