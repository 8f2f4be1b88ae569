"""Webhook receivers for tests: real HTTP servers on 127.0.0.1, and a blackhole.

:class:`Receiver` is a threaded ``http.server`` that records every request (path, headers,
body) and answers from a script (a list of statuses per path, then 200). :class:`Blackhole`
is a listening socket whose accept queue is full, so a connect to it never completes: the
"connect never answers" receiver of the isolation tests. Both are stopped by whoever started
them (``close()``), and both are context managers.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.procs import wait_for

__all__ = ["Answer", "Blackhole", "Receiver", "Request", "eventually"]


async def eventually(condition: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """:func:`tests.procs.wait_for` for tests whose server shares the event loop: polls
    without blocking it. Raises AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    #: The status the receiver answered with.
    status: int

    def json(self) -> Any:
        import json

        return json.loads(self.body)


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    #: Bytes of body to claim and trickle forever instead (a huge answer).
    endless: bool = False


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client (central) that drops a connection is what some tests are about


class Receiver:
    """A recording HTTP receiver. ``url(path)`` is where to point a webhook."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.script: dict[str, list[Answer]] = {}
        self.sent_bytes = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                # headers and body go out in two writes: without this, delayed ACKs add 40 ms
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    queue = receiver.script.get(self.path) or []
                    answer = queue.pop(0) if queue else Answer()
                    receiver.requests.append(
                        Request(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            time.monotonic(),
                            answer.status,
                        )
                    )
                self.send_response(answer.status)
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                if answer.endless:
                    self.send_header("Content-Length", str(1 << 40))
                    self.end_headers()
                    chunk = b"x" * 65536
                    try:
                        while True:  # until central stops reading and closes
                            self.wfile.write(chunk)
                            with receiver._lock:
                                receiver.sent_bytes += len(chunk)
                    except OSError:
                        self.close_connection = True
                    return
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, *answers: Answer) -> None:
        """Answer the next requests to ``path`` with ``answers``, in order (then 200)."""
        with self._lock:
            self.script.setdefault(path, []).extend(answers)

    def at(self, path: str = "/hook") -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def acknowledged(self, path: str = "/hook") -> list[Request]:
        """The requests to ``path`` that were answered 2xx."""
        return [r for r in self.at(path) if 200 <= r.status < 300]

    def unscript(self) -> None:
        """Drop every scripted answer: 200 from now on."""
        with self._lock:
            self.script.clear()

    async def arrived(
        self, count: int, path: str = "/hook", timeout: float = 30.0
    ) -> list[Request]:
        """:meth:`wait` for tests whose central shares the event loop."""
        found: list[Request] = await eventually(
            lambda: len(self.at(path)) >= count and self.at(path),
            timeout=timeout,
            what=f"{count} webhook requests to {path}",
        )
        return found

    def wait(self, count: int, path: str = "/hook", timeout: float = 30.0) -> list[Request]:
        """The first ``count`` requests to ``path`` once that many arrived."""
        found: list[Request] = wait_for(
            lambda: len(self.at(path)) >= count and self.at(path),
            timeout=timeout,
            what=f"{count} webhook requests to {path}",
        )
        return found

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Blackhole:
    """A port on 127.0.0.1 whose connects never complete: the listener's accept queue is
    filled and never drained, so the kernel drops further SYNs."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        self.port: int = self._listener.getsockname()[1]
        self._fillers: list[socket.socket] = []
        # Fill the accept queue (backlog 0 holds one; a few more cover kernel slack).
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", self.port))
            self._fillers.append(filler)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def is_black(self, timeout: float = 0.5) -> bool:
        """Whether a fresh connect really hangs (for a test to check its own premise)."""
        probe = socket.socket()
        probe.settimeout(timeout)
        try:
            probe.connect(("127.0.0.1", self.port))
        except TimeoutError:
            return True
        except OSError:
            return False
        finally:
            probe.close()
        return False

    def close(self) -> None:
        for filler in self._fillers:
            filler.close()
        self._listener.close()

    def __enter__(self) -> Blackhole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
