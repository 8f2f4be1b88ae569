"""One writer per replica path: a lock every central takes before it restores or replicates.

* ``file://`` replicas: an exclusive ``flock`` on ``<replica>/central.lock``. The kernel drops it
  when the process dies (even by SIGKILL), so a crashed central never blocks its successor; it
  protects centrals sharing a host or a file system with working POSIX locks.
* ``s3://`` replicas: a lease object ``<prefix>/central.lease`` (JSON: holder, host, pid,
  data_dir, expires_at) written with a plain SigV4-signed PUT and renewed every ``ttl/3``
  seconds. Another central refuses to start while an unexpired lease names someone else; a lease
  left by a dead process on the same host (its pid is gone) is taken over at once, any other
  expires after ``ttl``. Object stores give no compare-and-swap here, so two centrals started
  within the same second could both win: the lease guards against the operational mistake
  (a second central pointed at the same path), not against a deliberate race.

Both raise :class:`LeaseHeld` when another central holds the path.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import logging
import os
import socket
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import parse_qs, quote, urlsplit

__all__ = [
    "DATA_DIR_LOCK_NAME",
    "DEFAULT_LEASE_TTL_S",
    "FileLock",
    "Lease",
    "LeaseHeld",
    "S3Lease",
    "lease_for",
]

log = logging.getLogger(__name__)

#: Seconds an S3 lease stays valid without renewal.
DEFAULT_LEASE_TTL_S = 15.0
LOCK_NAME = "central.lock"
#: The lock of a data directory (its own name: a replica may live inside the data directory).
DATA_DIR_LOCK_NAME = "central-data.lock"
LEASE_NAME = "central.lease"


class LeaseHeld(Exception):
    """Another central holds the replica path; the message names it and how to proceed."""


class Lease(Protocol):
    """The writer lock of one replica path."""

    async def acquire(self, force: bool = False) -> None:
        """Take the lock. Raises :class:`LeaseHeld`, or OSError when the store is unreachable."""

    async def release(self) -> None:
        """Give the lock back (never raises)."""


class FileLock:
    """``flock`` on ``<directory>/<name>``; the kernel releases it when we die.

    ``what`` names the locked thing in the refusal ("the replica", "the data directory").
    """

    def __init__(self, directory: Path, name: str = LOCK_NAME, what: str = "the replica") -> None:
        self.path = directory / name
        self._what = what
        self._file: IO[str] | None = None

    async def acquire(self, force: bool = False) -> None:
        # force does not apply: a flock held by a live process cannot be taken over safely.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open while we own the lock
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise LeaseHeld(
                f"another central holds {self._what} {self.path.parent} ({holder}); "
                f"stop it first: one writer per {self._what.removeprefix('the ')}"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self._file = handle

    async def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.truncate(0)
            self._file.close()  # closing drops the flock
            self._file = None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class S3Client:
    """The three object calls a lease needs, SigV4-signed, over urllib (no extra dependency)."""

    def __init__(self, url: str, environ: Mapping[str, str]) -> None:
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.region = query.get("region") or environ.get("AWS_REGION") or "us-east-1"
        endpoint = query.get("endpoint")
        if endpoint:
            self.base = endpoint.rstrip("/") + "/" + self.bucket
        else:
            self.base = f"https://{self.bucket}.s3.{self.region}.amazonaws.com"
        self.key_id = environ.get("AWS_ACCESS_KEY_ID") or environ.get(
            "LITESTREAM_ACCESS_KEY_ID", ""
        )
        self.secret = environ.get("AWS_SECRET_ACCESS_KEY") or environ.get(
            "LITESTREAM_SECRET_ACCESS_KEY", ""
        )
        self.session_token = environ.get("AWS_SESSION_TOKEN")
        bundle = environ.get("AWS_CA_BUNDLE") or environ.get("SSL_CERT_FILE")
        self.ssl = ssl.create_default_context(cafile=bundle) if bundle else None

    def key_url(self, name: str) -> str:
        key = f"{self.prefix}/{name}" if self.prefix else name
        return self.base + "/" + quote(key, safe="/-_.~")

    def sign(
        self, method: str, url: str, body: bytes, now: dt.datetime | None = None
    ) -> dict[str, str]:
        """The headers of a SigV4-signed request (``Authorization`` included), without Host."""
        parts = urlsplit(url)
        amz_date = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
        date = amz_date[:8]
        payload_hash = hashlib.sha256(body).hexdigest()
        headers = {
            "host": parts.netloc,
            "x-amz-content-sha256": payload_hash,
            "x-amz-date": amz_date,
        }
        if self.session_token:
            headers["x-amz-security-token"] = self.session_token
        if method == "PUT":
            headers["content-type"] = "application/json"
        signed = ";".join(sorted(headers))
        canonical = "\n".join(
            [
                method,
                parts.path or "/",
                parts.query,
                "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
                signed,
                payload_hash,
            ]
        )
        scope = f"{date}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        key = ("AWS4" + self.secret).encode()
        for part in (date, self.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.key_id}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        )
        del headers["host"]  # urllib sends it
        return headers

    def request(self, method: str, name: str, body: bytes = b"", timeout: float = 5.0) -> bytes:
        """One signed request; returns the body. Raises urllib.error.HTTPError / OSError."""
        url = self.key_url(name)
        request = urllib.request.Request(
            url,
            data=body if method == "PUT" else None,
            method=method,
            headers=self.sign(method, url, body),
        )
        with urllib.request.urlopen(request, timeout=timeout, context=self.ssl) as response:
            data: bytes = response.read()
            return data


class S3Lease:
    """A renewed lease object ``<prefix>/central.lease`` in the S3 replica."""

    def __init__(
        self,
        url: str,
        data_dir: Path,
        environ: Mapping[str, str],
        ttl_s: float = DEFAULT_LEASE_TTL_S,
    ) -> None:
        self._client = S3Client(url, environ)
        self._ttl_s = ttl_s
        self._data_dir = str(data_dir.resolve())
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._task: asyncio.Task[None] | None = None
        self.where = f"s3://{self._client.bucket}/{self._client.prefix}/{LEASE_NAME}"

    def _read(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self._client.request("GET", LEASE_NAME))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        except ValueError:
            return None  # an unreadable lease protects nothing
        return data if isinstance(data, dict) else None

    def _write(self) -> None:
        lease = {
            "holder": self._holder,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "data_dir": self._data_dir,
            "expires_at": time.time() + self._ttl_s,
        }
        self._client.request("PUT", LEASE_NAME, json.dumps(lease).encode())

    def _held_by_other(self, lease: dict[str, Any] | None) -> bool:
        if not lease or lease.get("holder") == self._holder:
            return False
        if float(lease.get("expires_at", 0)) < time.time():
            return False
        pid = lease.get("pid")
        same_host = lease.get("host") == socket.gethostname()
        return not (same_host and isinstance(pid, int) and not _pid_alive(pid))

    def _acquire(self, force: bool) -> None:
        lease = self._read()
        if self._held_by_other(lease) and not force:
            assert lease is not None
            remaining = float(lease["expires_at"]) - time.time()
            raise LeaseHeld(
                f"another central holds the replica ({self.where}): pid {lease.get('pid')} on "
                f"{lease.get('host')}, data dir {lease.get('data_dir')}; its lease expires in "
                f"{remaining:.0f} s unless renewed. Stop it first (one writer per replica "
                "path), or pass --force if you know it is dead"
            )
        self._write()

    async def acquire(self, force: bool = False) -> None:
        await asyncio.to_thread(self._acquire, force)
        self._task = asyncio.create_task(self._renew(), name="replica-lease")

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self._ttl_s / 3)
            try:
                lease = await asyncio.to_thread(self._read)
                if self._held_by_other(lease):
                    log.error("replica lease %s was taken by %s", self.where, lease)
                    continue
                await asyncio.to_thread(self._write)
            except (OSError, ValueError) as exc:
                log.warning("cannot renew replica lease %s: %s", self.where, exc)

    async def release(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            lease = await asyncio.to_thread(self._read)
            if lease and lease.get("holder") == self._holder:
                await asyncio.to_thread(self._client.request, "DELETE", LEASE_NAME)
        except (OSError, ValueError) as exc:
            log.warning("cannot release replica lease %s: %s", self.where, exc)


def lease_for(base_url: str, data_dir: Path, environ: Mapping[str, str]) -> Lease:
    """The writer lock for a base replica URL (``file://`` or ``s3://``)."""
    parts = urlsplit(base_url)
    if parts.scheme == "file":
        return FileLock(Path(parts.path))
    if parts.scheme == "s3":
        return S3Lease(base_url, data_dir, environ)
    raise ValueError(f"unsupported replica URL scheme {parts.scheme!r}: use file:// or s3://")
