"""Fetch a version's artifact and refuse it unless its bytes hash to the recorded sha256.

The registry stores pointers, never binaries: a version record names an artifact URI and its
sha256. :func:`fetch_artifact` copies a ``file://`` or ``http(s)://`` artifact to a local path,
hashing while it copies, into a temporary file beside the destination that is renamed into place
only once the digest matched. A mismatch, a short read or any error leaves nothing new at
``dest`` (an existing file there is only ever replaced by a verified copy)::

    from modelreg.sidecar.artifacts import fetch_artifact
    from modelreg.sidecar.client import Client

    with Client() as reg:
        path = fetch_artifact(reg.resolve("fraud", "production"), "/models/fraud.onnx")

Other schemes (``s3://``, ``gs://``…) need their own SDKs and are refused with ``InvalidURI``.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from modelreg.errors import (
    ArtifactDigestMismatch,
    InvalidDigest,
    InvalidField,
    InvalidURI,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from modelreg.sidecar.client import ResolvedModel

__all__ = ["CHUNK_BYTES", "DEFAULT_HTTP_TIMEOUT_S", "FETCH_SCHEMES", "fetch_artifact"]

#: Bytes read and hashed per step while copying.
CHUNK_BYTES = 1024 * 1024
#: Seconds an HTTP artifact server may stay silent (connect, or between two reads).
DEFAULT_HTTP_TIMEOUT_S = 30.0
#: The URI schemes :func:`fetch_artifact` can copy.
FETCH_SCHEMES = ("file", "http", "https")

_HEX = frozenset("0123456789abcdef")


def _artifact_of(record: ResolvedModel | Mapping[str, Any]) -> tuple[str, str, int | None]:
    """``(uri, sha256, size)`` of a :class:`ResolvedModel` or a version record dict."""
    if isinstance(record, ResolvedModel):
        return record.artifact_uri, record.sha256, record.size
    artifact = record.get("artifact") if isinstance(record, Mapping) else None
    if not isinstance(artifact, Mapping):
        raise InvalidField("the record has no artifact {uri, sha256}", field="artifact")
    uri, sha256, size = artifact.get("uri"), artifact.get("sha256"), artifact.get("size")
    if not isinstance(uri, str) or not isinstance(sha256, str):
        raise InvalidField("the record's artifact needs a uri and a sha256", field="artifact")
    return uri, sha256, size if isinstance(size, int) else None


def _open_file(parsed: urllib.parse.SplitResult, uri: str) -> IO[bytes]:
    if parsed.netloc not in ("", "localhost"):
        raise InvalidURI(f"file URI with a remote host is not supported: {uri}", uri=uri)
    path = urllib.parse.unquote(parsed.path)
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise NotFound(f"artifact file does not exist: {path}", uri=uri) from None
    except IsADirectoryError:
        raise InvalidURI(f"artifact URI names a directory, not a file: {path}", uri=uri) from None
    except PermissionError:
        raise PermissionDenied(f"cannot read artifact file: {path}", uri=uri) from None


def _open_http(uri: str, timeout_s: float) -> IO[bytes]:
    request = urllib.request.Request(uri, headers={"Accept": "application/octet-stream"})
    try:
        response: IO[bytes] = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 404:
            raise NotFound(f"artifact not found (HTTP 404): {uri}", uri=uri) from None
        if exc.code in (401, 403):
            raise PermissionDenied(
                f"artifact server refused access (HTTP {exc.code}): {uri}", uri=uri
            ) from None
        raise Unavailable(f"artifact server answered HTTP {exc.code}: {uri}", uri=uri) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise Unavailable(f"cannot reach artifact server for {uri}: {reason}", uri=uri) from None
    return response


@contextlib.contextmanager
def _source(uri: str, timeout_s: float) -> Iterator[IO[bytes]]:
    parsed = urllib.parse.urlsplit(uri)
    scheme = parsed.scheme.lower()
    if scheme == "file":
        stream = _open_file(parsed, uri)
    elif scheme in ("http", "https"):
        stream = _open_http(uri, timeout_s)
    else:
        raise InvalidURI(
            f"cannot fetch {scheme or 'a scheme-less'} URI {uri!r}: fetch_artifact copies "
            f"{', '.join(s + '://' for s in FETCH_SCHEMES)} artifacts",
            uri=uri,
        )
    with stream:
        yield stream


def fetch_artifact(
    record: ResolvedModel | Mapping[str, Any],
    dest: str | os.PathLike[str],
    *,
    timeout_s: float = DEFAULT_HTTP_TIMEOUT_S,
) -> Path:
    """Copy ``record``'s artifact to ``dest`` and return the path written.

    ``record`` is a :class:`~modelreg.sidecar.client.ResolvedModel` or a version record dict (as
    central's API returns it). ``dest`` is the file to write, or an existing directory to write
    into under the URI's last path segment. The bytes are streamed, hashed while copied to a
    temporary file in the same directory, and renamed onto ``dest`` only when the sha256 (and
    the size, when the record has one) matched.

    Raises :class:`~modelreg.errors.ArtifactDigestMismatch` (with ``uri``, ``expected``,
    ``actual``) when the digest differs, ``InvalidURI`` for a scheme it cannot copy,
    ``InvalidDigest`` for a record whose sha256 is not 64 lowercase hex digits, ``NotFound`` for
    a missing file or an HTTP 404, ``PermissionDenied`` for a refused read, and ``Unavailable``
    when the server cannot be reached or fails mid-transfer. In every error case nothing new is
    left at ``dest``.
    """
    uri, expected, size = _artifact_of(record)
    if len(expected) != 64 or not _HEX.issuperset(expected):
        raise InvalidDigest(
            f"the record's sha256 is not 64 lowercase hex digits: {expected!r}", actual=expected
        )
    target = Path(dest)
    if target.is_dir():
        name = Path(urllib.parse.unquote(urllib.parse.urlsplit(uri).path)).name
        if not name:
            raise InvalidURI(f"cannot name a file after {uri!r}; pass a file path as dest", uri=uri)
        target = target / name
    with _source(uri, timeout_s) as stream:
        target.parent.mkdir(parents=True, exist_ok=True)  # only once the source could be opened
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".part", dir=target.parent
        )
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            copied = 0
            with os.fdopen(fd, "wb") as out:
                while True:
                    try:
                        chunk = stream.read(CHUNK_BYTES)
                    except (OSError, ValueError, http.client.HTTPException) as exc:
                        raise Unavailable(
                            f"reading {uri} failed after {copied} bytes: {exc}", uri=uri
                        ) from None
                    if not chunk:
                        break
                    digest.update(chunk)
                    out.write(chunk)
                    copied += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            actual = digest.hexdigest()
            if actual != expected:
                raise ArtifactDigestMismatch(
                    f"artifact {uri} has sha256 {actual}, but the version record says "
                    f"{expected}; refusing it",
                    uri=uri,
                    expected=expected,
                    actual=actual,
                )
            if size is not None and copied != size:
                raise ArtifactDigestMismatch(
                    f"artifact {uri} is {copied} bytes, but the version record says {size}",
                    uri=uri,
                    expected=size,
                    actual=copied,
                )
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return target
