"""Argument checks for every :class:`modelreg.central.registry.Registry` method.

Pure functions: each returns the clean value or raises the matching class of
:mod:`modelreg.errors` (with ``field=`` naming the argument) before anything touches the
database, so bad input never changes anything.

Limits are module constants; they bound what one request can make central store.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from modelreg.central.records import parse_time
from modelreg.errors import InvalidDigest, InvalidField, InvalidName, InvalidURI
from modelreg.objectstore import refuse_credentials

__all__ = [
    "MAX_ACTOR_LEN",
    "MAX_DEPTH",
    "MAX_DESCRIPTION_LEN",
    "MAX_JSON_BYTES",
    "MAX_LIMIT",
    "MAX_TAGS",
    "MAX_TEXT_LEN",
    "MAX_URI_LEN",
    "NAME_RE",
    "RESERVED_ALIASES",
    "SYSTEM_PATHS",
    "URI_SCHEMES",
    "actor",
    "alias_name",
    "dataset_uri",
    "limit",
    "metrics",
    "model_name",
    "optional_text",
    "params",
    "positive_int",
    "sha256",
    "size",
    "tags",
    "text",
    "time_bound",
    "uri",
    "version_number",
]

#: Names of models and aliases.
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,127}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_SCHEME_RE = re.compile(r"([a-z][a-z0-9+.-]*):")
#: Artifact URI schemes central accepts.
URI_SCHEMES = frozenset(
    {"s3", "gs", "az", "abfs", "file", "https", "http", "hf", "oci", "dbfs", "runs", "models"}
)
#: Schemes whose URIs name a bucket, container or host right after ``//``.
_HOSTED_SCHEMES = frozenset({"s3", "gs", "az", "abfs", "https", "http", "hf", "oci"})
#: Directories of the operating system a ``file:`` artifact may not point into: no model lives
#: there, and a node fetching the artifact would read its own host's files.
SYSTEM_PATHS = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib64",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr/bin",
    "/usr/lib",
    "/usr/sbin",
    "/var/run",
)
#: Alias names that would be ambiguous in a ref (``latest``; digits are version numbers).
RESERVED_ALIASES = frozenset({"latest"})

MAX_ACTOR_LEN = 128
MAX_URI_LEN = 2048
#: run_id, commit, format, comments, reasons, owner.
MAX_TEXT_LEN = 1024
MAX_DESCRIPTION_LEN = 16 * 1024
#: Serialized size of one JSON object argument (params, metrics, tags), in bytes.
MAX_JSON_BYTES = 64 * 1024
MAX_TAGS = 100
MAX_TAG_KEY_LEN = 128
MAX_LIMIT = 1000
#: Deepest nesting of a JSON argument (params).
MAX_DEPTH = 32
#: Integer range SQLite (and msgpack, signed) stores.
_MAX_INT = 2**63 - 1
_MIN_INT = -(2**63)


def model_name(value: Any, field: str = "name") -> str:
    """A model name matching :data:`NAME_RE`; raises :class:`InvalidName`."""
    if not isinstance(value, str) or NAME_RE.fullmatch(value) is None:
        raise InvalidName(
            f"invalid {field} {_show(value)}: expected [a-z0-9][a-z0-9._-]{{0,127}}",
            field=field,
        )
    return value


def alias_name(value: Any, field: str = "alias") -> str:
    """An alias name: like a model name, but not ``latest`` and not all digits."""
    name = model_name(value, field)
    if name in RESERVED_ALIASES or name.isdigit():
        raise InvalidName(
            f"invalid {field} {name!r}: 'latest' and numbers are refs, not alias names",
            field=field,
        )
    return name


def sha256(value: Any, field: str = "sha256") -> str:
    """64 lowercase hex digits; raises :class:`InvalidDigest`."""
    if not isinstance(value, str) or _SHA256_RE.fullmatch(value) is None:
        raise InvalidDigest(
            f"invalid {field} {_show(value)}: expected 64 lowercase hex digits", field=field
        )
    return value


def uri(
    value: Any,
    field: str = "artifact_uri",
    schemes: Collection[str] = URI_SCHEMES,
    roots: Sequence[str] = (),
) -> str:
    """A URI safe to hand to every node; raises :class:`InvalidURI` naming what is wrong.

    Refused: a scheme outside ``schemes`` (default :data:`URI_SCHEMES`); credentials
    (:func:`modelreg.objectstore.refuse_credentials`); control, format (bidi overrides,
    zero-width), space and unassigned characters, raw or percent-encoded; backslashes;
    ``.`` and ``..`` path segments, raw or encoded (``%2e%2e``, ``..%2f``); a missing or
    ``.``/``..`` bucket or host; a ``file:`` URI that is not ``file:///absolute/path`` on this
    host, or that points into the operating system (:data:`SYSTEM_PATHS`). When ``roots`` is
    given, the URI must lie under one of them, on a path boundary.
    """
    if not isinstance(value, str) or not value or len(value) > MAX_URI_LEN:
        raise InvalidURI(
            f"invalid {field} {_show(value)}: expected a URI of at most {MAX_URI_LEN} chars",
            field=field,
        )
    _uri_characters(value, field, "")
    match = _SCHEME_RE.match(value)
    if match is None or match.group(1) not in schemes or len(value) == match.end():
        raise InvalidURI(
            f"invalid {field} {_show(value)}: the scheme must be one of "
            + ", ".join(sorted(schemes)),
            field=field,
        )
    scheme = match.group(1)
    _no_credentials(value, field)
    parts = urlsplit(value)
    path = unquote(parts.path)
    _uri_characters(path, field, "percent-encoded ")
    if "\\" in value or "\\" in path:
        raise InvalidURI(f"invalid {field}: backslashes are not allowed", field=field)
    if any(segment in (".", "..") for segment in path.split("/")):
        raise InvalidURI(
            f"invalid {field}: '.' and '..' path segments are not allowed (relative traversal)",
            field=field,
        )
    host = parts.netloc.rpartition("@")[2]
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not path.startswith("/"):
            raise InvalidURI(
                f"invalid {field} {_show(value)}: use file:///absolute/path (a file on the "
                "node itself; no host, no relative path)",
                field=field,
            )
        system = next((p for p in SYSTEM_PATHS if path == p or path.startswith(p + "/")), None)
        if system is not None:
            raise InvalidURI(
                f"invalid {field}: {system} belongs to the operating system, not to models",
                field=field,
            )
    elif scheme in _HOSTED_SCHEMES and host in ("", ".", ".."):
        raise InvalidURI(
            f"invalid {field} {_show(value)}: {scheme}:// needs a bucket or host name",
            field=field,
        )
    if roots and not any(_under(value, root) for root in roots):
        raise InvalidURI(
            f"invalid {field} {_show(value)}: artifacts must live under "
            + ", ".join(roots)
            + " (setting artifact_uri_roots)",
            field=field,
        )
    return value


def dataset_uri(value: Any, field: str = "dataset_uri") -> str | None:
    """None, or a dataset pointer: any text up to :data:`MAX_URI_LEN` without control, format
    or space characters and without credentials; one with a scheme of :data:`URI_SCHEMES` is
    checked like an artifact URI (:func:`uri`, any root)."""
    if value is None:
        return None
    pointer = text(value, field, MAX_URI_LEN)
    _uri_characters(pointer, field, "")
    _no_credentials(pointer, field)
    match = _SCHEME_RE.match(pointer)
    if match is not None and match.group(1) in URI_SCHEMES:
        uri(pointer, field)
    return pointer


def _no_credentials(value: str, field: str) -> None:
    try:
        refuse_credentials(value, field)
    except InvalidURI as exc:
        raise InvalidURI(exc.message, field=field) from None


def _under(value: str, root: str) -> bool:
    """Whether ``value`` is ``root`` or below it (``s3://b/p`` covers ``s3://b/p/x``, not
    ``s3://b/px``)."""
    return value == root.rstrip("/") or value.startswith(root if root.endswith("/") else root + "/")


def _uri_characters(text: str, field: str, how: str) -> None:
    """Refuse control, format, space and unassigned characters; a percent-encoded space (``how``
    non-empty: ``text`` is decoded) is an ordinary file-name character."""
    for ch in text:
        if unicodedata.category(ch)[0] in "CZ" and not (how and ch == " "):
            raise InvalidURI(
                f"invalid {field}: {how}control, format (bidi, zero-width), space or unassigned "
                f"character U+{ord(ch):04X} (percent-encode spaces as %20)",
                field=field,
            )


def actor(value: Any) -> str:
    """The acting token's name: a non-empty string."""
    if not isinstance(value, str) or not value or len(value) > MAX_ACTOR_LEN:
        raise InvalidField(f"invalid actor {_show(value)}", field="actor")
    _utf8(value, "actor")
    return value


def text(value: Any, field: str, max_len: int = MAX_TEXT_LEN) -> str:
    """A string of at most ``max_len`` characters (no NUL)."""
    if not isinstance(value, str):
        raise InvalidField(f"{field} must be a string, not {_kind(value)}", field=field)
    if len(value) > max_len:
        raise InvalidField(f"{field} is longer than {max_len} characters", field=field)
    if "\x00" in value:
        raise InvalidField(f"{field} must not contain NUL characters", field=field)
    _utf8(value, field)
    return value


def optional_text(value: Any, field: str, max_len: int = MAX_TEXT_LEN) -> str | None:
    """None, or :func:`text`."""
    return None if value is None else text(value, field, max_len)


def positive_int(value: Any, field: str) -> int:
    """An integer ≥ 1 (bool is not an integer here)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= _MAX_INT:
        raise InvalidField(f"{field} must be a positive integer, not {_show(value)}", field=field)
    return value


def version_number(value: Any, field: str = "version") -> int:
    """A version number: an int ≥ 1, or a string of digits (from a URL path)."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 19:
        value = int(value)
    return positive_int(value, field)


def size(value: Any, field: str = "size") -> int | None:
    """None or a byte count ≥ 0."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_INT:
        raise InvalidField(f"{field} must be an integer ≥ 0, not {_show(value)}", field=field)
    return value


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidField(f"{field} must be a JSON object, not {_kind(value)}", field=field)
    for key in value:
        if not isinstance(key, str) or not key or len(key) > MAX_TAG_KEY_LEN or "\x00" in key:
            raise InvalidField(
                f"{field} keys must be non-empty strings of at most {MAX_TAG_KEY_LEN} chars",
                field=field,
            )
    _check_json(value, field, 0)
    encoded = json.dumps(value, allow_nan=False, ensure_ascii=False)
    if len(encoded.encode()) > MAX_JSON_BYTES:
        raise InvalidField(f"{field} is larger than {MAX_JSON_BYTES} bytes", field=field)
    # A JSON round trip gives plain dict/list/str/number values (no tuples, no subclasses).
    result: dict[str, Any] = json.loads(encoded)
    return result


def _check_json(value: Any, field: str, depth: int) -> None:
    """Only JSON values every consumer can carry: UTF-8 strings, 64-bit integers, finite
    floats, and at most :data:`MAX_DEPTH` levels (the sidecar re-encodes records as msgpack)."""
    if depth > MAX_DEPTH:
        raise InvalidField(f"{field} is nested deeper than {MAX_DEPTH} levels", field=field)
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        _utf8(value, field)
    elif isinstance(value, int):
        if not _MIN_INT <= value <= _MAX_INT:
            raise InvalidField(f"{field} holds an integer outside 64 bits", field=field)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidField(f"{field} holds NaN or infinity", field=field)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidField(f"{field} keys must be strings", field=field)
            _utf8(key, field)
            _check_json(item, field, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, field, depth + 1)
    else:
        raise InvalidField(f"{field} must hold only JSON values", field=field)


def _utf8(value: str, field: str) -> None:
    """Refuse strings SQLite cannot store (lone surrogates, from JSON ``\\ud800`` escapes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidField(f"{field} is not valid UTF-8 text", field=field) from None


def tags(value: Any, field: str = "tags") -> dict[str, str]:
    """A JSON object of at most :data:`MAX_TAGS` string keys to string values."""
    obj = _object(value, field)
    if len(obj) > MAX_TAGS:
        raise InvalidField(f"{field} has more than {MAX_TAGS} entries", field=field)
    for key, item in obj.items():
        if not isinstance(item, str) or len(item) > MAX_TEXT_LEN:
            raise InvalidField(
                f"{field}[{key!r}] must be a string of at most {MAX_TEXT_LEN} chars",
                field=field,
            )
    return obj


def params(value: Any, field: str = "params") -> dict[str, Any]:
    """A JSON object of any JSON values."""
    return _object(value, field)


def metrics(value: Any, field: str = "metrics") -> dict[str, int | float]:
    """A JSON object whose values are finite numbers."""
    obj = _object(value, field)
    for key, item in obj.items():
        if (
            not isinstance(item, int | float)
            or isinstance(item, bool)
            or (isinstance(item, float) and not math.isfinite(item))
        ):
            raise InvalidField(f"{field}[{key!r}] must be a number", field=field)
    return obj


def limit(value: Any) -> int:
    """A page size, 1..:data:`MAX_LIMIT`."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_LIMIT:
        raise InvalidField(f"limit must be an integer 1..{MAX_LIMIT}", field="limit")
    return value


def time_bound(value: Any, field: str) -> str | None:
    """None, an aware/naive (UTC) datetime, or an RFC 3339 string -> the stored time format."""
    if value is None:
        return None
    try:
        if isinstance(value, datetime):
            moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        elif isinstance(value, str):
            moment = parse_time(value)
        else:
            raise InvalidField(f"{field} must be an RFC 3339 time", field=field)
        moment = moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidField(f"{field}: {exc}", field=field) from None
    # Zero-padded by hand: strftime("%Y") does not pad years below 1000 on every platform.
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
        f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond:06d}Z"
    )


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _show(value: Any) -> str:
    """A short, safe rendering of a bad value for an error message."""
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."
