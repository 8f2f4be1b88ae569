"""The sidecar's socket protocol: framing, request validation and response encoding. No I/O.

Layers, each usable without a socket::

    bytes ──FrameDecoder──▶ payload objects ──parse_request──▶ Request ──(server)──▶ answer
    answer ──encode_frame / ok_frame / error_frame──▶ bytes

A frame is a 4-byte unsigned big-endian length, then that many bytes of one msgpack value.
Requests are msgpack maps of at most :data:`MAX_REQUEST_BYTES`; a longer length prefix is a
:class:`FrameTooLarge` and the connection must be closed (the stream cannot be resynchronised).
A frame whose payload is not msgpack is a :class:`BadPayload`: that frame is consumed, the
stream stays in sync, and the server answers it with an error frame.

Responses are maps: ``{"ok": true, "result": ..., "revision": n, "age_ms": n, "id"?: ...}`` or
``{"ok": false, "error": {"code", "message", ...details}, "id"?: ...}``. The codes are those of
:mod:`modelreg.errors`. ``docs/PROTOCOL.md`` is the specification; this module is its reference
implementation.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from modelreg.errors import InvalidField, InvalidRequest, RegistryError, error_body

__all__ = [
    "MAX_ID_BYTES",
    "MAX_REQUEST_BYTES",
    "MAX_RESPONSE_BYTES",
    "MAX_WAIT_MS",
    "OPS",
    "BadPayload",
    "FrameDecoder",
    "FrameError",
    "FrameTooLarge",
    "Request",
    "decode_payload",
    "encode_frame",
    "error_frame",
    "ok_entry",
    "ok_frame",
    "ok_prefix",
    "pack",
    "parse_request",
    "request_id",
    "result_of",
    "revision_tail",
]

#: Largest request payload a server accepts, in bytes (the 4-byte prefix not counted).
MAX_REQUEST_BYTES: Final = 64 * 1024
#: Largest response payload a client should accept, in bytes: ``list`` on a big registry.
MAX_RESPONSE_BYTES: Final = 512 * 1024 * 1024
#: Largest ``wait_ms`` a server honours; larger values are capped to it (milliseconds).
MAX_WAIT_MS: Final = 60_000
#: Largest ``id`` (str or bin) in bytes; ids are echoed verbatim.
MAX_ID_BYTES: Final = 256
#: The operations, in the order docs/PROTOCOL.md documents them.
OPS: Final = ("resolve", "get", "list", "status", "watch", "ping")

_LEN = struct.Struct(">I")
_INT64_MIN: Final = -(2**63)
_UINT64_MAX: Final = 2**64 - 1


class FrameError(Exception):
    """The byte stream is not a valid sequence of frames."""


class FrameTooLarge(FrameError):
    """A length prefix is above the decoder's limit: close the connection."""

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"frame of {length} bytes is larger than the limit of {limit} bytes")
        self.length = length
        self.limit = limit


class BadPayload(FrameError):
    """One frame's payload is not a single msgpack value; the frame was consumed."""


def pack(obj: Any) -> bytes:
    """msgpack-encode ``obj`` the way every answer is encoded (str as str, bytes as bin)."""
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def encode_frame(obj: Any) -> bytes:
    """One frame: the 4-byte big-endian length of ``pack(obj)`` followed by it."""
    payload = pack(obj)
    return _LEN.pack(len(payload)) + payload


def _unpack(payload: bytes | bytearray) -> Any:
    # raw=False: msgpack str -> Python str (invalid UTF-8 is an error); strict_map_key=False so
    # that a map with an int key is rejected by validation with a clear message, not here.
    return msgpack.unpackb(payload, raw=False, strict_map_key=False, use_list=True)


class FrameDecoder:
    """Incremental decoder: :meth:`feed` bytes, then iterate over the complete frames' values.

    Iteration yields each decoded payload (any msgpack value) and stops when no complete frame
    is buffered. ``next()`` raises :class:`BadPayload` for a frame that is not msgpack (the frame
    is dropped and iteration may continue) and :class:`FrameTooLarge` when a length prefix is
    above ``max_frame`` (fatal: nothing after it can be trusted).
    """

    __slots__ = ("_buf", "_pos", "max_frame")

    def __init__(self, max_frame: int = MAX_REQUEST_BYTES) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def payloads(self, data: bytes) -> list[bytes | FrameTooLarge]:
        """Feed ``data`` and return the payload of every frame it completes, undecoded.

        An oversized length prefix appears as a :class:`FrameTooLarge` instance and ends the
        list (the decoder must not be fed again). For servers that look payloads up before
        decoding them; see :meth:`decode` for the decoded form.
        """
        buf: bytes | bytearray
        if self._pos or self._buf:
            self.feed(data)
            buf = self._buf
        else:
            buf = data
        size = len(buf)
        pos = 0
        out: list[bytes | FrameTooLarge] = []
        limit = self.max_frame
        unpack_len = _LEN.unpack_from
        while size - pos >= 4:
            (length,) = unpack_len(buf, pos)
            if length > limit:
                out.append(FrameTooLarge(length, limit))
                pos = size
                break
            end = pos + 4 + length
            if end > size:
                break
            out.append(bytes(buf[pos + 4 : end]))
            pos = end
        if buf is self._buf:
            del self._buf[:pos]
        elif pos < size:
            self._buf += buf[pos:]
        self._pos = 0
        return out

    def decode(self, data: bytes) -> list[Any]:
        """Feed ``data`` and return every value completed by it, in order: the batch form of
        iteration (one call per read instead of one ``next()`` per frame).

        A frame whose payload is not msgpack appears in the list as a :class:`BadPayload`
        instance; an oversized length prefix appears as a :class:`FrameTooLarge` instance and
        ends the list (the decoder must not be fed again). Exceptions are returned rather than
        raised so that the frames before them are not lost.
        """
        return [
            p if isinstance(p, FrameTooLarge) else decode_payload(p) for p in self.payloads(data)
        ]

    @property
    def pending(self) -> int:
        """Bytes buffered that do not yet form a complete frame (0 between frames)."""
        return len(self._buf) - self._pos

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < 4:
            raise StopIteration
        (length,) = _LEN.unpack_from(buf, pos)
        if length > self.max_frame:
            raise FrameTooLarge(length, self.max_frame)
        end = pos + 4 + length
        if len(buf) < end:
            raise StopIteration
        payload = bytes(buf[pos + 4 : end])
        self._pos = end
        if end == len(buf):
            buf.clear()
            self._pos = 0
        try:
            return _unpack(payload)
        except Exception as exc:  # msgpack raises several unrelated classes
            raise BadPayload(
                f"frame payload is not one msgpack value ({type(exc).__name__})"
            ) from None


def decode_payload(payload: bytes) -> Any:
    """One frame's payload decoded, or a :class:`BadPayload` instance if it is not msgpack."""
    try:
        return _unpack(payload)
    except Exception as exc:  # msgpack raises several unrelated classes
        return BadPayload(f"frame payload is not one msgpack value ({type(exc).__name__})")


@dataclass(frozen=True, slots=True)
class Request:
    """One validated request. ``ref`` is always a string (a version number is its digits)."""

    op: str
    id: Any = None
    model: str | None = None
    ref: str | None = None
    min_revision: int | None = None
    wait_ms: int = 0
    #: With ``min_revision``: the chain hash central gave that revision; the answer then comes
    #: only from a history holding that very event there.
    revision_hash: str | None = None


_HASH_RE = re.compile(r"[0-9a-f]{64}")


def _check_id(value: Any) -> Any:
    if value is None or type(value) is bool:
        return value
    if isinstance(value, int):
        if _INT64_MIN <= value <= _UINT64_MAX:
            return value
    elif isinstance(value, str):
        if len(value.encode()) <= MAX_ID_BYTES:
            return value
    elif isinstance(value, bytes) and len(value) <= MAX_ID_BYTES:
        return value
    raise InvalidField(
        f"id must be nil, a bool, an integer, or a string or binary of at most {MAX_ID_BYTES}"
        " bytes",
        field="id",
    )


def _text(obj: dict[Any, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value or len(value) > 256:
        raise InvalidField(
            f"{name} must be a non-empty string of at most 256 characters", field=name
        )
    return value


def _int(obj: dict[Any, Any], name: str, minimum: int) -> int | None:
    value = obj.get(name)
    if value is None:
        return None
    if type(value) is not int or not minimum <= value <= _UINT64_MAX:
        raise InvalidField(f"{name} must be an integer >= {minimum}", field=name)
    return value


def _revision_hash(obj: dict[Any, Any], min_revision: int | None) -> str | None:
    value = obj.get("revision_hash")
    if value is None:
        return None
    if not isinstance(value, str) or _HASH_RE.fullmatch(value) is None:
        raise InvalidField("revision_hash must be 64 lowercase hex digits", field="revision_hash")
    if min_revision is None:
        raise InvalidField("revision_hash goes with min_revision", field="revision_hash")
    return value


def request_id(obj: Any) -> Any:
    """The ``id`` of a raw request if it is one that may be echoed, else None."""
    if type(obj) is dict:
        try:
            return _check_id(obj.get("id"))
        except InvalidField:
            return None
    return None


def parse_request(obj: Any) -> Request:
    """Validate one decoded payload. Raises :class:`InvalidRequest` / :class:`InvalidField`.

    Unknown keys are ignored (forward compatibility). ``ref`` may be a string or a non-negative
    integer; an integer becomes its decimal string.
    """
    if type(obj) is not dict:
        raise InvalidRequest(f"a request must be a msgpack map, got {_kind(obj)}")
    rid = _check_id(obj.get("id"))
    op = obj.get("op")
    if op not in OPS:
        raise InvalidField(
            f"unknown op {op!r}" if isinstance(op, str) else "op must be a string",
            field="op",
            expected=list(OPS),
        )
    if op in ("resolve", "watch"):
        model = _text(obj, "model")
        raw_ref = obj.get("ref")
        if type(raw_ref) is int and 0 <= raw_ref <= _UINT64_MAX:
            ref = str(raw_ref)
        else:
            ref = _text(obj, "ref")
        if op == "watch":
            return Request(op, rid, model, ref)
        min_revision = _int(obj, "min_revision", 0)
        wait_ms = _int(obj, "wait_ms", 0) or 0
        revision_hash = _revision_hash(obj, min_revision)
        return Request(op, rid, model, ref, min_revision, min(wait_ms, MAX_WAIT_MS), revision_hash)
    if op == "get":
        return Request(op, rid, _text(obj, "model"))
    return Request(op, rid)


def _kind(obj: Any) -> str:
    return {
        list: "an array",
        str: "a string",
        bytes: "binary",
        int: "an integer",
        float: "a float",
        bool: "a boolean",
        type(None): "nil",
    }.get(type(obj), type(obj).__name__)


# Pre-encoded fragments of a response map. msgpack maps are a header followed by key/value
# pairs, so an answer is built by concatenation: header + ok_prefix + packed age [+ id pair].
_OK_RESULT: Final = pack("ok") + pack(True) + pack("result")
_REVISION_KEY: Final = pack("revision")
_AGE_KEY: Final = pack("age_ms")
_ID_KEY: Final = pack("id")
_MAP4: Final = b"\x84"
_MAP5: Final = b"\x85"


def ok_entry(result_packed: bytes) -> bytes:
    """The revision-independent start of a success answer: the ``ok`` and ``result`` pairs.

    The index stores answers in this form, so an unchanged answer's bytes are shared by every
    index that holds it; :func:`revision_tail` supplies the rest."""
    return _OK_RESULT + result_packed


def revision_tail(revision: int) -> bytes:
    """The ``revision`` pair and the ``age_ms`` key, which follow an :func:`ok_entry`."""
    return _REVISION_KEY + pack(revision) + _AGE_KEY


def ok_prefix(result_packed: bytes, revision: int) -> bytes:
    """The constant part of a success answer: ``ok``, ``result`` and ``revision`` pairs, then
    the ``age_ms`` key. :func:`ok_frame` completes it with the age and the optional ``id``."""
    return _OK_RESULT + result_packed + _REVISION_KEY + pack(revision) + _AGE_KEY


def ok_frame(prefix: bytes, age_packed: bytes, rid: Any = None) -> bytes:
    """A complete success frame from :func:`ok_prefix` output and ``pack(age_ms)``."""
    if rid is None:
        body = prefix + age_packed
        return _LEN.pack(len(body) + 1) + _MAP4 + body
    body = prefix + age_packed + _ID_KEY + pack(rid)
    return _LEN.pack(len(body) + 1) + _MAP5 + body


def result_of(prefix: bytes) -> bytes:
    """The packed ``result`` inside an :func:`ok_prefix` or :func:`ok_entry`."""
    start = len(_OK_RESULT)
    # The tail is revision key + packed revision + age key; the revision is found by decoding.
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(prefix[start:])
    unpacker.skip()
    return prefix[start : start + unpacker.tell()]


def error_frame(exc: RegistryError, rid: Any = None) -> bytes:
    """A complete error frame: ``{"ok": false, "error": {...}, "id"?: rid}``."""
    answer: dict[str, Any] = {"ok": False, "error": error_body(exc)["error"]}
    if rid is not None:
        answer["id"] = rid
    return encode_frame(answer)
