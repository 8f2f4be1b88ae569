"""One writer per replica path: a lock every central takes before it restores or replicates.

The lock must not live only inside the replica: deleting the replica (``rm -rf``, an emptied
bucket prefix) used to delete the lock with it, and a second central on an empty data directory
then took the lock while the first still ran, and started a new history at revision 1.

* ``file://`` replicas (:class:`ReplicaFileLock`): an exclusive ``flock`` on
  ``<parent>/.<replica name>.central.lock``, *beside* the replica directory, so removing the
  replica leaves it in place; and, for centrals of earlier releases, on the old
  ``<replica>/central.lock`` too. The kernel drops a flock when its process dies (even by
  SIGKILL), so a crashed central never blocks its successor. A watch re-takes the lock if its
  file is deleted or replaced meanwhile, and reports it when another central got it first. It
  protects centrals sharing a host or a file system with working POSIX locks.
* ``s3://`` replicas (:class:`S3Lease`): a lease object ``<prefix>/central.lease`` (JSON:
  holder, host, pid, data_dir, expires_at) renewed every ``ttl/3`` seconds with conditional
  PUTs (``If-Match`` its ETag; ``If-None-Match: *`` to create one), so two centrals never both
  win a write. Another central refuses to start while an unexpired lease names someone else; a
  lease left by a dead process on the same host is taken over at once, one released by a clean
  stop at once, any other after ``ttl``. When there is *no* lease object — a first start, or a
  prefix deleted under a running central — the new central writes its lease and waits one
  renewal period (plus a second) before it trusts it: a live holder re-writes its lease within
  that time (it renews even a lease it finds missing, or taken while its own was valid), and
  the newcomer then refuses to start. ``force`` takes over an unexpired lease, but still
  refuses a holder that renews it meanwhile: the holder is alive.

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
    "ReplicaFileLock",
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

    def status(self) -> dict[str, Any]:
        """What /healthz shows of the lock (``lost`` is not None once another central got
        it)."""


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

    def intact(self) -> bool:
        """Whether the file at :attr:`path` is still the one we hold locked (True when not
        held)."""
        if self._file is None:
            return True
        try:
            return os.stat(self.path).st_ino == os.fstat(self._file.fileno()).st_ino
        except FileNotFoundError:
            return False

    async def retake(self) -> None:
        """Lock a fresh file at :attr:`path` after ours was deleted or replaced; raises
        :class:`LeaseHeld` when another process locked it first (ours stays held meanwhile)."""
        old, self._file = self._file, None
        try:
            await self.acquire()
        except BaseException:
            self._file = old
            raise
        if old is not None:
            old.close()

    def status(self) -> dict[str, Any]:
        return {"kind": "flock", "path": str(self.path)}


#: Seconds between two checks that a held lock file is still the one we lock.
WATCH_INTERVAL_S = 1.0


class ReplicaFileLock:
    """The writer lock of a ``file://`` replica: :class:`FileLock` on
    ``<parent>/.<name>.central.lock`` beside the replica, and on the older
    ``<replica>/central.lock`` inside it; a watch re-takes either if its file goes."""

    def __init__(self, replica: Path) -> None:
        self.replica = replica
        outside = FileLock(replica.parent, f".{replica.name or 'replica'}.central.lock")
        self._locks = [outside, FileLock(replica)]
        self._task: asyncio.Task[None] | None = None
        #: Times a deleted lock file was re-taken; whether another central got it first.
        self.retaken = 0
        self.lost: str | None = None

    @property
    def path(self) -> Path:
        """The lock that survives the replica's deletion."""
        return self._locks[0].path

    async def acquire(self, force: bool = False) -> None:
        taken: list[FileLock] = []
        try:
            for lock in self._locks:
                await lock.acquire(force)
                taken.append(lock)
        except BaseException:
            for lock in taken:
                await lock.release()
            raise
        self._task = asyncio.create_task(self._watch(), name="replica-lock-watch")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            for lock in self._locks:
                if lock.intact():
                    continue
                try:
                    await lock.retake()
                    self.retaken += 1
                    log.warning("writer lock %s was deleted or replaced; re-taken", lock.path)
                except LeaseHeld as exc:
                    if self.lost is None:
                        log.error("writer lock %s: %s", lock.path, exc)
                    self.lost = str(exc)
                except OSError as exc:
                    log.warning("writer lock %s cannot be re-taken yet: %s", lock.path, exc)

    async def release(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for lock in reversed(self._locks):
            await lock.release()

    def status(self) -> dict[str, Any]:
        return {"kind": "flock", "path": str(self.path), "retaken": self.retaken, "lost": self.lost}


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
        return self.call(method, name, body, timeout=timeout)[0]

    def call(
        self,
        method: str,
        name: str,
        body: bytes = b"",
        condition: Mapping[str, str] | None = None,
        timeout: float = 5.0,
    ) -> tuple[bytes, str | None]:
        """One signed request with optional conditional headers (``If-Match``,
        ``If-None-Match``, not signed: S3 allows that); ``(body, ETag)``. Raises
        urllib.error.HTTPError (412 for a failed condition) / OSError."""
        url = self.key_url(name)
        headers = self.sign(method, url, body)
        headers.update(condition or {})
        request = urllib.request.Request(
            url, data=body if method == "PUT" else None, method=method, headers=headers
        )
        with urllib.request.urlopen(request, timeout=timeout, context=self.ssl) as response:
            data: bytes = response.read()
            return data, response.headers.get("ETag")


class _Precondition(Exception):
    """A conditional PUT of the lease failed: someone else wrote (or deleted) it."""


#: Seconds a central taking a lease nobody held waits beyond one renewal period before it
#: trusts the lease (a live holder of a deleted lease re-writes it within that period).
VERIFY_MARGIN_S = 1.0


class S3Lease:
    """A renewed lease object ``<prefix>/central.lease`` in the S3 replica (module docstring)."""

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
        self._etag: str | None = None
        #: time.monotonic() until which our lease is valid without another renewal.
        self._valid_until = 0.0
        self.where = f"s3://{self._client.bucket}/{self._client.prefix}/{LEASE_NAME}"
        #: Times the lease object was found missing and re-written, or taken and reclaimed.
        self.recreated = 0
        self.reclaimed = 0
        self.lost: str | None = None

    @property
    def renew_s(self) -> float:
        return self._ttl_s / 3

    def _read(self) -> tuple[dict[str, Any] | None, str | None]:
        """The lease object and its ETag; ``(None, None)`` when there is none."""
        try:
            raw, etag = self._client.call("GET", LEASE_NAME)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None, None
            raise
        try:
            data = json.loads(raw)
        except ValueError:
            return None, etag  # an unreadable lease protects nothing (but can be replaced)
        return (data if isinstance(data, dict) else None), etag

    def _body(self, released: bool = False) -> bytes:
        lease = {
            "holder": self._holder,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "data_dir": self._data_dir,
            "expires_at": 0 if released else time.time() + self._ttl_s,
        }
        if released:
            lease["released"] = True
        return json.dumps(lease).encode()

    def _put(self, etag: str | None, released: bool = False) -> None:
        """Write our lease over the object with ``etag`` (None: only if there is none)."""
        condition = {"If-None-Match": "*"} if etag is None else {"If-Match": etag}
        try:
            _, new = self._client.call("PUT", LEASE_NAME, self._body(released), condition)
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 409, 412):
                raise _Precondition(str(exc.code)) from None
            raise
        self._etag = new or self._read()[1]
        if not released:
            self._valid_until = time.monotonic() + self._ttl_s

    def _held_by_other(self, lease: dict[str, Any] | None) -> bool:
        if not lease or lease.get("holder") == self._holder or lease.get("released"):
            return False
        if float(lease.get("expires_at", 0)) < time.time():
            return False
        pid = lease.get("pid")
        same_host = lease.get("host") == socket.gethostname()
        return not (same_host and isinstance(pid, int) and not _pid_alive(pid))

    def _refusal(self, lease: dict[str, Any], why: str) -> LeaseHeld:
        remaining = float(lease.get("expires_at", 0)) - time.time()
        return LeaseHeld(
            f"another central holds the replica ({self.where}): pid {lease.get('pid')} on "
            f"{lease.get('host')}, data dir {lease.get('data_dir')}; {why} (its lease expires "
            f"in {max(0, remaining):.0f} s unless renewed). Stop it first (one writer per "
            "replica path), or pass --force if you know it is dead"
        )

    def _take(self, force: bool) -> bool:
        """Write our lease if nobody else holds it; True when it must be verified."""
        lease, etag = self._read()
        if self._held_by_other(lease) and not force:
            assert lease is not None
            raise self._refusal(lease, "it is alive")
        try:
            self._put(etag)
        except _Precondition:
            lease, _ = self._read()
            raise self._refusal(lease or {}, "it wrote the lease at the same moment") from None
        return etag is None or force

    def _verify(self) -> None:
        lease, etag = self._read()
        if lease is not None and lease.get("holder") != self._holder:
            raise self._refusal(
                lease,
                "it re-wrote its lease while this one started (its replica was probably "
                "deleted under it)",
            )
        try:
            self._put(etag)  # renew at once: the wait used up part of the lease
        except _Precondition:
            lease, _ = self._read()
            raise self._refusal(lease or {}, "it wrote the lease at the same moment") from None

    async def acquire(self, force: bool = False) -> None:
        if await asyncio.to_thread(self._take, force):
            await asyncio.sleep(self.renew_s + VERIFY_MARGIN_S)
            await asyncio.to_thread(self._verify)
        self._task = asyncio.create_task(self._renew(), name="replica-lease")

    def _renew_once(self) -> None:
        try:
            self._put(self._etag)
            return
        except _Precondition:
            pass
        lease, etag = self._read()
        if lease is None:
            self._put(None)
            self.recreated += 1
            log.warning("replica lease %s vanished (replica deleted?); written again", self.where)
        elif lease.get("holder") == self._holder:
            self._put(etag)
        elif time.monotonic() < self._valid_until:
            self._put(etag)
            self.reclaimed += 1
            log.error(
                "replica lease %s was taken by %s while ours was valid; reclaimed",
                self.where,
                lease.get("holder"),
            )
        else:
            self.lost = f"taken by {lease.get('holder')} on {lease.get('host')}"
            log.error("replica lease %s lost: %s", self.where, self.lost)

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.renew_s)
            try:
                await asyncio.to_thread(self._renew_once)
            except (OSError, ValueError, _Precondition) as exc:
                log.warning("cannot renew replica lease %s: %s", self.where, exc)

    async def release(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            lease, etag = await asyncio.to_thread(self._read)
            if lease and lease.get("holder") == self._holder:
                # Marked released, not deleted: the next central sees that nobody holds it and
                # need not wait for a holder that might still be alive (see the docstring).
                await asyncio.to_thread(self._put, etag, True)
        except (OSError, ValueError, _Precondition) as exc:
            log.warning("cannot release replica lease %s: %s", self.where, exc)

    def status(self) -> dict[str, Any]:
        return {
            "kind": "s3 lease",
            "path": self.where,
            "recreated": self.recreated,
            "reclaimed": self.reclaimed,
            "lost": self.lost,
        }


def lease_for(
    base_url: str,
    data_dir: Path,
    environ: Mapping[str, str],
    ttl_s: float = DEFAULT_LEASE_TTL_S,
) -> Lease:
    """The writer lock for a base replica URL (``file://`` or ``s3://``)."""
    parts = urlsplit(base_url)
    if parts.scheme == "file":
        return ReplicaFileLock(Path(parts.path))
    if parts.scheme == "s3":
        return S3Lease(base_url, data_dir, environ, ttl_s)
    raise ValueError(f"unsupported replica URL scheme {parts.scheme!r}: use file:// or s3://")
