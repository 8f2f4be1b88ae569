"""The webhook delivery client against a raw HTTP server on 127.0.0.1 that answers scripted
bytes: framing, keep-alive, caps and the ways an answer goes wrong."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from yarl import URL

from modelreg.central.targets import GuardedResolver
from modelreg.central.webhook_http import MAX_HEAD_BYTES, Answer, DeliveryHTTPError, PostClient


@dataclass
class RawServer:
    """Answers each request with the next scripted bytes; ``close`` after it closes."""

    script: list[tuple[bytes, bool]] = field(default_factory=list)
    requests: list[bytes] = field(default_factory=list)
    connections: int = 0
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.requests.append(head + await reader.readexactly(length))
                answer, close = self.script.pop(0) if self.script else (OK, False)
                if answer == b"":
                    await asyncio.sleep(3600)  # never answers
                writer.write(answer)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture
async def server() -> AsyncIterator[RawServer]:
    raw = RawServer()
    listener = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
    raw.port = listener.sockets[0].getsockname()[1]
    try:
        yield raw
    finally:
        listener.close()


@pytest.fixture
async def client() -> AsyncIterator[PostClient]:
    http = PostClient(GuardedResolver(True), "test/1", connect_timeout_s=2.0)
    try:
        yield http
    finally:
        await http.close()


async def _post(
    client: PostClient, server: RawServer, path: str = "/hook", limit: int = 100
) -> Answer:
    url = URL(f"http://127.0.0.1:{server.port}{path}")
    return await client.post(url, {"webhook-id": "x"}, b'{"a":1}', 5.0, limit)


class TestFraming:
    async def test_the_request_is_one_post_with_its_headers(
        self, client: PostClient, server: RawServer
    ) -> None:
        """Request line, Host with the port, the headers given, Content-Length, the body."""
        await _post(client, server, "/hook?x=1")
        head, _, body = server.requests[0].partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        expected = (
            "POST /hook?x=1 HTTP/1.1",
            f"Host: 127.0.0.1:{server.port}",
            True,
            True,
            b'{"a":1}',
        )
        assert expected == (
            lines[0],
            lines[1],
            "webhook-id: x" in lines,
            "Content-Length: 7" in lines,
            body,
        )

    async def test_connections_are_kept_alive(self, client: PostClient, server: RawServer) -> None:
        """Three deliveries in a row use one connection."""
        answers = [await _post(client, server) for _ in range(3)]
        expected = ([200] * 3, [b"ok"] * 3, 1)
        assert expected == (
            [a.status for a in answers],
            [a.body for a in answers],
            server.connections,
        )

    async def test_a_chunked_answer_is_read(self, client: PostClient, server: RawServer) -> None:
        """Chunk extensions and trailers are taken; the connection stays usable."""
        server.script.append(
            (
                b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n",
                False,
            )
        )
        first = await _post(client, server)
        second = await _post(client, server)
        expected = ((202, b"abcde"), 200, 1)
        assert expected == ((first.status, first.body), second.status, server.connections)

    async def test_interim_answers_are_skipped(self, client: PostClient, server: RawServer) -> None:
        """``100 Continue`` before the answer is not the answer."""
        server.script.append((b"HTTP/1.1 100 Continue\r\n\r\n" + OK, False))
        answer = await _post(client, server)
        assert (200, b"ok") == (answer.status, answer.body)

    async def test_an_answer_framed_by_its_end(self, client: PostClient, server: RawServer) -> None:
        """HTTP/1.0 without Content-Length: the body runs to the close; no reuse."""
        server.script.append((b"HTTP/1.0 200 OK\r\n\r\nthe end", True))
        answer = await _post(client, server)
        await _post(client, server)
        expected = (b"the end", 2)
        assert expected == (answer.body, server.connections)

    async def test_no_body_for_204(self, client: PostClient, server: RawServer) -> None:
        """204 carries no body even without Content-Length, and the connection is reused."""
        server.script.append((b"HTTP/1.1 204 No Content\r\n\r\n", False))
        answer = await _post(client, server)
        await _post(client, server)
        expected = (204, b"", 1)
        assert expected == (answer.status, answer.body, server.connections)


class TestLimits:
    async def test_a_long_body_is_cut_and_its_connection_dropped(
        self, client: PostClient, server: RawServer
    ) -> None:
        """Past ``read_limit`` the body is not read: the connection is closed, not reused."""
        server.script.append(
            (b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000, False)
        )
        answer = await _post(client, server, limit=10)
        await _post(client, server)
        expected = (b"x" * 10, 2)
        assert expected == (answer.body, server.connections)

    async def test_a_long_chunked_body_is_cut(self, client: PostClient, server: RawServer) -> None:
        """Chunks past ``read_limit`` are not read."""
        server.script.append(
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n"
                + b"y" * 16
                + b"\r\n",
                False,
            )
        )
        answer = await _post(client, server, limit=5)
        assert b"yyyyy" == answer.body

    async def test_huge_headers_are_refused(self, client: PostClient, server: RawServer) -> None:
        """Headers over MAX_HEAD_BYTES end the attempt with an error, not with memory."""
        big = b"X-Big: " + b"a" * (MAX_HEAD_BYTES + 10) + b"\r\n"
        server.script.append((b"HTTP/1.1 200 OK\r\n" + big + b"\r\n", False))
        with pytest.raises(DeliveryHTTPError) as caught:
            await _post(client, server)
        assert "headers" in str(caught.value)

    async def test_a_silent_receiver_times_out(self, client: PostClient, server: RawServer) -> None:
        """No answer within the timeout: TimeoutError."""
        server.script.append((b"", False))
        url = URL(f"http://127.0.0.1:{server.port}/hook")
        with pytest.raises(TimeoutError):
            await client.post(url, {}, b"{}", 0.3, 100)


class TestBrokenAnswers:
    @pytest.mark.parametrize(
        "answer",
        [
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/2 200\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ],
    )
    async def test_what_is_not_http_is_an_error(
        self, client: PostClient, server: RawServer, answer: bytes
    ) -> None:
        """A malformed answer raises DeliveryHTTPError (its message goes to the attempt log)."""
        server.script.append((answer, True))
        with pytest.raises(DeliveryHTTPError):
            await _post(client, server)

    async def test_an_answer_cut_short_is_an_error(
        self, client: PostClient, server: RawServer
    ) -> None:
        """The connection ending inside the announced body is an error."""
        server.script.append((b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", True))
        with pytest.raises(DeliveryHTTPError):
            await _post(client, server)

    async def test_a_connection_closed_while_idle_is_replaced(
        self, client: PostClient, server: RawServer
    ) -> None:
        """The receiver closes a kept-alive connection after its answer: the next delivery
        goes out on a new connection and succeeds."""
        server.script.append((OK, True))
        await _post(client, server)
        await asyncio.sleep(0.05)
        answer = await _post(client, server)
        expected = (200, 2)
        assert expected == (answer.status, server.connections)

    async def test_a_closed_port_is_a_connect_error(self, client: PostClient) -> None:
        """Nothing listening: DeliveryHTTPError naming the address."""
        from tests.procs import free_port

        url = URL(f"http://127.0.0.1:{free_port()}/hook")
        with pytest.raises(DeliveryHTTPError) as caught:
            await client.post(url, {}, b"{}", 2.0, 100)
        assert "cannot connect" in str(caught.value)
