"""The HTTP/1.1 client of webhook deliveries: POST one body, read a capped answer.

Why not aiohttp's client (the rest of central is aiohttp): a delivery is one small POST, and
aiohttp's client spends ~175 µs of CPU on it where a plain asyncio protocol spends ~25 µs
(measured side by side against the same receiver, benchmarks/RESULTS.md "Webhooks"). At 100
events/s to 10 subscriptions that difference is 15 % of a core on central's event loop, the loop
that also answers the API. So this module does only what deliveries need, and refuses the rest:

* ``POST`` with a body of known length, ``Content-Length`` framing; HTTP/1.1 keep-alive, one
  request at a time per connection, idle connections closed after :data:`KEEPALIVE_S`;
* answers: a status line, headers of at most :data:`MAX_HEAD_BYTES` in all, then a body framed
  by ``Content-Length``, ``Transfer-Encoding: chunked``, or the connection's end; ``1xx``
  interim answers are skipped; at most ``read_limit`` bytes of the body are read, and a longer
  body closes the connection (it is never drained);
* ``http`` and ``https`` (the default TLS context: certificates and host names verified);
* a name is resolved by the resolver given (``central/targets.py``'s
  :class:`~modelreg.central.targets.GuardedResolver`, which drops refused addresses) on every new
  connection, and each address is tried in turn;
* a kept-alive connection that fails before any byte of the answer (the receiver closed it while
  idle) is retried once on a new connection;
* no redirects (a 3xx is an answer like any other), no proxy, no cookies, no compression.

:meth:`PostClient.post` raises :class:`DeliveryHTTPError` (its message fit for the attempt log)
and ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from typing import cast

from aiohttp.abc import AbstractResolver
from yarl import URL

__all__ = [
    "KEEPALIVE_S",
    "MAX_HEAD_BYTES",
    "Answer",
    "DeliveryHTTPError",
    "PostClient",
]

#: Seconds an idle connection is kept for the next delivery (receivers often close at 15-60 s).
KEEPALIVE_S = 10.0
#: Largest status line plus headers accepted, in bytes.
MAX_HEAD_BYTES = 64 * 1024
#: Idle connections kept per receiver (host, port, scheme).
MAX_IDLE_PER_HOST = 32
_DEFAULT_PORTS = {"http": 80, "https": 443}


class DeliveryHTTPError(Exception):
    """The request could not be made or the answer was not HTTP/1.x; the message says why."""


@dataclass(frozen=True)
class Answer:
    """A receiver's answer: status, headers (names lowercased, the last value of each) and the
    first ``read_limit`` bytes of the body."""

    status: int
    headers: dict[str, str]
    body: bytes


class _Connection(asyncio.Protocol):
    """One connection to a receiver: buffers what arrives, wakes the reader."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.closed = False
        self.idle_since = 0.0
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self.closed = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def more(self) -> bool:
        """Wait for more bytes; False when the connection ended instead."""
        if self.closed:
            return False
        self._waiter = asyncio.get_running_loop().create_future()
        before = len(self.buffer)
        await self._waiter
        return len(self.buffer) > before or not self.closed

    def usable(self, moment: float) -> bool:
        return (
            not self.closed
            and self.transport is not None
            and not self.transport.is_closing()
            and not self.buffer
            and moment - self.idle_since < KEEPALIVE_S
        )

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _Stale(Exception):
    """A kept-alive connection ended before any byte of the answer."""


class PostClient:
    """POSTs to webhook receivers over pooled connections. No I/O in the constructor;
    ``await close()`` closes every idle connection."""

    def __init__(
        self,
        resolver: AbstractResolver,
        user_agent: str,
        connect_timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._resolver = resolver
        self._user_agent = user_agent
        self._connect_timeout_s = connect_timeout_s
        self._ssl = ssl_context
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._swept = 0.0

    async def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    async def post(
        self, url: URL, headers: dict[str, str], body: bytes, timeout_s: float, read_limit: int
    ) -> Answer:
        """POST ``body`` to ``url`` with ``headers`` (``Host``, ``Content-Length`` and
        ``User-Agent`` are added); the answer, its body cut at ``read_limit`` bytes, all within
        ``timeout_s`` seconds. Raises :class:`DeliveryHTTPError` and ``TimeoutError``."""
        async with asyncio.timeout(timeout_s):
            request = self._request(url, headers, body)
            key = (url.scheme, url.host or "", url.port or _DEFAULT_PORTS[url.scheme])
            connection = self._pooled(key)
            if connection is not None:
                try:
                    return await self._exchange(key, connection, request, read_limit, True)
                except _Stale:
                    pass  # closed by the receiver while idle: once more on a new connection
            connection = await self._connect(url, key)
            return await self._exchange(key, connection, request, read_limit, False)

    # -- connections -------------------------------------------------------------------------

    def _pooled(self, key: tuple[str, str, int]) -> _Connection | None:
        moment = time.monotonic()
        if moment - self._swept > KEEPALIVE_S:  # now and then, close what idled too long
            self._swept = moment
            for other, connections in list(self._idle.items()):
                kept = []
                for connection in connections:
                    if connection.usable(moment):
                        kept.append(connection)
                    else:
                        connection.close()
                if kept:
                    self._idle[other] = kept
                else:
                    del self._idle[other]
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if connection.usable(moment):
                return connection
            connection.close()
        return None

    def _release(self, key: tuple[str, str, int], connection: _Connection) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) >= MAX_IDLE_PER_HOST:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    async def _connect(self, url: URL, key: tuple[str, str, int]) -> _Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        if _is_ip(host):
            addresses = [host]
        else:
            try:
                found = await self._resolver.resolve(host, port, family=socket.AF_UNSPEC)
            except OSError as exc:
                raise DeliveryHTTPError(f"cannot resolve {host}: {exc.strerror or exc}") from None
            addresses = list(dict.fromkeys(str(r["host"]) for r in found))
        tls: ssl.SSLContext | None = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        reasons: list[str] = []
        for address in addresses:
            try:
                _, protocol = await asyncio.wait_for(
                    loop.create_connection(
                        _Connection,
                        address,
                        port,
                        ssl=tls,
                        server_hostname=host if tls is not None else None,
                    ),
                    self._connect_timeout_s,
                )
            except TimeoutError:
                reasons.append(f"{address}: no answer within {self._connect_timeout_s:g} s")
                continue
            except (OSError, ssl.SSLError) as exc:
                reasons.append(f"{address}: {getattr(exc, 'strerror', None) or exc}")
                continue
            return protocol
        origin = f"{scheme}://{url.raw_authority}"
        raise DeliveryHTTPError(f"cannot connect to {origin}: {'; '.join(reasons)}")

    # -- one exchange ------------------------------------------------------------------------

    def _request(self, url: URL, headers: dict[str, str], body: bytes) -> bytes:
        host = url.raw_host or ""
        if ":" in host:
            host = f"[{host}]"
        if url.port is not None and url.port != _DEFAULT_PORTS.get(url.scheme):
            host += f":{url.port}"
        lines = [f"POST {url.raw_path_qs or '/'} HTTP/1.1", f"Host: {host}"]
        lines.append(f"User-Agent: {self._user_agent}")
        if url.raw_user:
            credentials = f"{url.user or ''}:{url.password or ''}".encode()
            lines.append("Authorization: Basic " + base64.b64encode(credentials).decode())
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    async def _exchange(
        self,
        key: tuple[str, str, int],
        connection: _Connection,
        request: bytes,
        read_limit: int,
        reused: bool,
    ) -> Answer:
        assert connection.transport is not None
        try:
            connection.transport.write(request)
            while True:  # skip 1xx interim answers (100 Continue, 103 Early Hints)
                status, version, headers = await self._head(connection, reused)
                reused = False
                if status >= 200:
                    break
            body, complete = await self._body(connection, status, headers, read_limit)
        except BaseException:
            connection.close()
            raise
        keep = (
            complete
            and version == "HTTP/1.1"
            and "close" not in headers.get("connection", "").lower()
            and not connection.buffer
            and not connection.closed
        )
        if keep:
            self._release(key, connection)
        else:
            connection.close()
        return Answer(status, headers, body)

    async def _head(self, connection: _Connection, reused: bool) -> tuple[int, str, dict[str, str]]:
        while (end := connection.buffer.find(b"\r\n\r\n")) < 0:
            if len(connection.buffer) > MAX_HEAD_BYTES:
                raise DeliveryHTTPError(f"the answer's headers are over {MAX_HEAD_BYTES} bytes")
            if not await connection.more():
                if reused and not connection.buffer:
                    raise _Stale()
                raise DeliveryHTTPError("the receiver closed the connection without answering")
        if end > MAX_HEAD_BYTES:
            raise DeliveryHTTPError(f"the answer's headers are over {MAX_HEAD_BYTES} bytes")
        head = bytes(connection.buffer[:end]).decode("latin-1")
        del connection.buffer[: end + 4]
        status_line, *lines = head.split("\r\n")
        version, _, rest = status_line.partition(" ")
        code = rest[:3]
        if version not in ("HTTP/1.1", "HTTP/1.0") or not code.isdigit() or len(code) != 3:
            raise DeliveryHTTPError(f"not an HTTP/1.x answer: {status_line[:80]!r}")
        headers: dict[str, str] = {}
        for line in lines:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise DeliveryHTTPError(f"malformed answer header {line[:80]!r}")
            headers[name.lower()] = value.strip()
        return int(code), version, headers

    async def _body(
        self, connection: _Connection, status: int, headers: dict[str, str], read_limit: int
    ) -> tuple[bytes, bool]:
        """The body (at most ``read_limit`` bytes) and whether all of it was read."""
        if status in (204, 304):
            return b"", True
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return await self._chunked(connection, read_limit)
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise DeliveryHTTPError(f"invalid Content-Length {length[:40]!r}")
            wanted = int(length)
            take = min(wanted, read_limit)
            await self._fill(connection, take)
            body = bytes(connection.buffer[:take])
            del connection.buffer[:take]
            return body, take == wanted
        while len(connection.buffer) < read_limit and await connection.more():  # until close
            pass
        body = bytes(connection.buffer[:read_limit])
        return body, False

    async def _fill(self, connection: _Connection, size: int) -> None:
        while len(connection.buffer) < size:
            if not await connection.more():
                raise DeliveryHTTPError("the connection ended inside the answer's body")

    async def _chunked(self, connection: _Connection, read_limit: int) -> tuple[bytes, bool]:
        body = bytearray()
        while True:
            while (end := connection.buffer.find(b"\r\n")) < 0:
                if len(connection.buffer) > 1024 or not await connection.more():
                    raise DeliveryHTTPError("malformed chunked answer")
            size_text = bytes(connection.buffer[:end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise DeliveryHTTPError("malformed chunk size in the answer") from None
            del connection.buffer[: end + 2]
            if size == 0:
                while (end := connection.buffer.find(b"\r\n")) != 0:  # trailers, then a CRLF
                    if end > 0:
                        del connection.buffer[: end + 2]
                    elif len(connection.buffer) > MAX_HEAD_BYTES or not await connection.more():
                        raise DeliveryHTTPError("malformed chunked answer trailer")
                del connection.buffer[:2]
                return bytes(body), True
            if len(body) + size > read_limit:
                await self._fill(connection, min(size, read_limit - len(body)))
                body += connection.buffer[: read_limit - len(body)]
                return bytes(body), False
            await self._fill(connection, size + 2)
            body += connection.buffer[:size]
            del connection.buffer[: size + 2]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
