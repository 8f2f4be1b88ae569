"""The socket protocol without a socket: framing, validation, answer encoding."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelreg.errors import AliasNotFound, InvalidField, InvalidRequest, ModelNotFound
from modelreg.sidecar.config import SETTINGS
from modelreg.sidecar.protocol import (
    MAX_REQUEST_BYTES,
    BadPayload,
    FrameDecoder,
    FrameTooLarge,
    Request,
    decode_payload,
    encode_frame,
    error_frame,
    ok_frame,
    ok_prefix,
    pack,
    parse_request,
    result_of,
)

# msgpack values: unicode text, 64-bit integers (signed and unsigned), binary, nesting.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def decode_all(data: bytes, chunk: int = 0) -> list[Any]:
    decoder = FrameDecoder()
    out: list[Any] = []
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] if chunk else [data]
    for piece in pieces:
        decoder.feed(piece)
        out.extend(decoder)
    return out


class TestFraming:
    @given(st.lists(values, max_size=5), st.integers(min_value=0, max_value=7))
    def test_round_trip_in_any_chunking(self, objs: list[Any], chunk: int) -> None:
        """Any sequence of values survives encode -> decode however the bytes are split."""
        data = b"".join(encode_frame(o) for o in objs)
        assert objs == decode_all(data, chunk)

    def test_prefix_is_big_endian_length(self) -> None:
        """The first four bytes are the payload length, big-endian."""
        frame = encode_frame({"op": "ping"})
        assert struct.unpack(">I", frame[:4])[0] == len(frame) - 4
        assert msgpack.unpackb(frame[4:]) == {"op": "ping"}

    def test_oversized_prefix_is_fatal(self) -> None:
        """A 4 GiB length prefix raises FrameTooLarge before any payload arrives."""
        decoder = FrameDecoder()
        decoder.feed(b"\xff\xff\xff\xff")
        with pytest.raises(FrameTooLarge):
            next(decoder)

    def test_limit_is_inclusive(self) -> None:
        """A payload of exactly MAX_REQUEST_BYTES is accepted, one more byte is not."""
        decoder = FrameDecoder()
        decoder.feed(struct.pack(">I", MAX_REQUEST_BYTES))
        assert list(decoder) == []
        decoder = FrameDecoder()
        decoder.feed(struct.pack(">I", MAX_REQUEST_BYTES + 1))
        with pytest.raises(FrameTooLarge):
            next(decoder)

    def test_bad_payload_skips_only_that_frame(self) -> None:
        """A frame that is not msgpack raises BadPayload and the next frame still decodes."""
        decoder = FrameDecoder()
        decoder.feed(struct.pack(">I", 1) + b"\xc1" + encode_frame({"op": "ping"}))
        with pytest.raises(BadPayload):
            next(decoder)
        assert list(decoder) == [{"op": "ping"}]

    def test_trailing_bytes_are_bad_payload(self) -> None:
        """Two msgpack values in one frame are rejected."""
        payload = pack(1) + pack(2)
        decoder = FrameDecoder()
        decoder.feed(struct.pack(">I", len(payload)) + payload)
        with pytest.raises(BadPayload):
            next(decoder)

    def test_partial_frame_is_pending(self) -> None:
        """An incomplete frame yields nothing and is reported as pending bytes."""
        frame = encode_frame({"op": "ping"})
        decoder = FrameDecoder()
        decoder.feed(frame[:-1])
        assert list(decoder) == []
        assert len(frame) - 1 == decoder.pending
        decoder.feed(frame[-1:])
        assert list(decoder) == [{"op": "ping"}]
        assert decoder.pending == 0


class TestBatchDecode:
    @given(st.lists(values, max_size=5), st.integers(min_value=1, max_value=9))
    def test_batches_match_iteration(self, objs: list[Any], chunk: int) -> None:
        """decode() returns the same values as iteration, however the bytes are split."""
        data = b"".join(encode_frame(o) for o in objs)
        decoder = FrameDecoder()
        out: list[Any] = []
        for i in range(0, len(data), chunk):
            out.extend(decoder.decode(data[i : i + chunk]))
        assert objs == out
        assert decoder.pending == 0

    def test_errors_are_returned_in_place(self) -> None:
        """A bad payload is returned in its position; an oversized prefix ends the batch."""
        data = (
            encode_frame(1)
            + struct.pack(">I", 1)
            + b"\xc1"
            + encode_frame(2)
            + b"\xff\xff\xff\xff"
            + encode_frame(3)
        )
        out = FrameDecoder().decode(data)
        assert [int, BadPayload, int, FrameTooLarge] == [type(o) for o in out]
        assert [1, 2] == [o for o in out if isinstance(o, int)]


class TestPayloads:
    def test_raw_payloads_in_order(self) -> None:
        """payloads() returns each frame's bytes undecoded; bad msgpack is not its concern."""
        data = encode_frame({"op": "ping"}) + struct.pack(">I", 1) + b"\xc1" + encode_frame(7)
        decoder = FrameDecoder()
        expected = [pack({"op": "ping"}), b"\xc1"]
        assert expected == decoder.payloads(data[:-1])
        assert [pack(7)] == decoder.payloads(data[-1:])

    def test_decode_payload_returns_bad_payload(self) -> None:
        """decode_payload turns undecodable bytes into a BadPayload value."""
        assert isinstance(decode_payload(b"\xc1"), BadPayload)
        assert {"a": 1} == decode_payload(pack({"a": 1}))


class TestParseRequest:
    def test_resolve_with_integer_ref(self) -> None:
        """An integer ref becomes its decimal string."""
        expected = Request("resolve", 7, "fraud", "3", None, 0)
        assert expected == parse_request({"op": "resolve", "id": 7, "model": "fraud", "ref": 3})

    def test_resolve_with_wait(self) -> None:
        """min_revision and wait_ms are carried through."""
        raw = {"op": "resolve", "model": "m", "ref": "production", "min_revision": 9, "wait_ms": 5}
        assert Request("resolve", None, "m", "production", 9, 5) == parse_request(raw)

    @pytest.mark.parametrize(
        "raw",
        [
            [1, 2],
            "resolve",
            {"op": "nope"},
            {"op": 1},
            {},
            {"op": "resolve", "model": "m"},
            {"op": "resolve", "model": 1, "ref": "x"},
            {"op": "resolve", "model": "m", "ref": -1},
            {"op": "resolve", "model": "m", "ref": "x", "min_revision": "1"},
            {"op": "resolve", "model": "m", "ref": "x", "wait_ms": -5},
            {"op": "get"},
            {"op": "ping", "id": [1]},
            {"op": "ping", "id": "x" * 1000},
        ],
    )
    def test_invalid_requests(self, raw: Any) -> None:
        """Wrong shapes and types raise InvalidRequest."""
        with pytest.raises(InvalidRequest):
            parse_request(raw)

    @given(values)
    def test_never_raises_anything_else(self, raw: Any) -> None:
        """Any decoded value either parses or raises InvalidRequest."""
        try:
            request = parse_request(raw)
        except InvalidRequest:
            return
        assert request.op in ("resolve", "get", "list", "status", "watch", "ping")

    def test_unknown_op_names_the_field(self) -> None:
        """The error for an unknown op says which field is wrong."""
        with pytest.raises(InvalidField) as caught:
            parse_request({"op": "drop"})
        assert caught.value.details["field"] == "op"


class TestAnswers:
    @given(
        values, st.integers(min_value=0, max_value=2**63), st.integers(min_value=0, max_value=2**40)
    )
    def test_ok_frame_decodes(self, result: Any, revision: int, age: int) -> None:
        """A concatenated answer decodes to the documented map."""
        frame = ok_frame(ok_prefix(pack(result), revision), pack(age))
        expected = {"ok": True, "result": result, "revision": revision, "age_ms": age}
        assert [expected] == decode_all(frame)

    @given(
        st.none()
        | st.integers(min_value=-(2**63), max_value=2**64 - 1)
        | st.text(max_size=50)
        | st.binary(max_size=50)
    )
    def test_ok_frame_echoes_id(self, rid: Any) -> None:
        """The id is echoed verbatim (unicode, 64-bit ints, binary)."""
        frame = ok_frame(ok_prefix(pack("r"), 1), pack(2), rid)
        answer = decode_all(frame)[0]
        assert rid == answer.get("id")

    def test_result_of_extracts_result(self) -> None:
        """result_of returns the packed result inside a prefix."""
        packed = pack({"model": "m", "version": 3})
        assert packed == result_of(ok_prefix(packed, 2**40))

    def test_error_frame(self) -> None:
        """An error frame carries the code, message and details, and echoes the id."""
        frame = error_frame(ModelNotFound("no model named 'x'", model="x"), rid=b"\x00")
        expected = {
            "ok": False,
            "error": {"code": "model_not_found", "message": "no model named 'x'", "model": "x"},
            "id": b"\x00",
        }
        assert [expected] == decode_all(frame)


class TestProtocolDoc:
    doc = " ".join((Path(__file__).parents[2] / "docs" / "PROTOCOL.md").read_text().split())

    @pytest.mark.parametrize(
        "frame",
        [
            encode_frame({"op": "ping"}),
            ok_frame(ok_prefix(pack("pong"), 42), pack(12)),
            encode_frame({"op": "resolve", "model": "fraud", "ref": "production", "id": 7}),
            error_frame(
                AliasNotFound("model 'fraud' has no alias 'prod'", model="fraud", alias="prod"),
                rid=7,
            ),
        ],
    )
    def test_hex_examples_match_the_encoder(self, frame: bytes) -> None:
        """Every hex example in docs/PROTOCOL.md is what the reference encoder produces."""
        assert frame.hex(" ") in self.doc

    def test_every_error_code_and_setting_is_documented(self) -> None:
        """The sidecar's error codes and every REG_SIDECAR_* variable appear in the doc."""
        codes = [
            "bad_request",
            "invalid_field",
            "payload_too_large",
            "model_not_found",
            "version_not_found",
            "alias_not_found",
            "not_ready",
            "timeout",
            "unavailable",
        ]
        missing = [c for c in codes if f"`{c}`" not in self.doc]
        missing += [s.env for s in SETTINGS if s.env not in self.doc]
        assert [] == missing

    def test_every_flag_of_sidecar_run_is_documented(self) -> None:
        """Each option of `reg sidecar run` appears in the settings table."""
        from modelreg.cli.sidecar_cmd import run

        flags = [opt for param in run.params for opt in param.opts if opt.startswith("--")]
        assert [] == [flag for flag in flags if f"`{flag}`" not in self.doc and flag != "--help"]
