"""The client's decoded-answer cache, without a socket: hits only when just the age changed."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelreg.errors import AliasNotFound, Unavailable
from modelreg.sidecar.client import _AnswerCache
from modelreg.sidecar.protocol import encode_frame

FRAME = encode_frame({"op": "resolve", "model": "fraud", "ref": "production"})


def record(version: int = 1) -> dict[str, Any]:
    """A version record as the sidecar sends it."""
    return {
        "model": "fraud",
        "version": version,
        "status": "approved",
        "artifact": {"uri": f"s3://b/{version}", "sha256": "a" * 64, "size": 1, "format": ""},
        "params": {"lr": 0.1},
        "ref": "production",
    }


def body(version: int = 1, revision: int = 7, age_ms: int = 5, **extra: Any) -> bytes:
    """An ok answer, keys in the sidecar's order (age_ms last unless ``extra`` follows)."""
    answer = {"ok": True, "result": record(version), "revision": revision, "age_ms": age_ms}
    return msgpack.packb({**answer, **extra})


class TestAnswerCache:
    def test_same_answer_new_age_is_a_hit(self) -> None:
        """Only age_ms differs: the cached record is reused with the new age."""
        cache = _AnswerCache()
        first = cache.record(FRAME, body(age_ms=5))
        second = cache.record(FRAME, body(age_ms=70_000))
        assert (5, 70_000) == (first.age_ms, second.age_ms)
        assert first.raw is second.raw
        assert first.params == second.params

    def test_new_revision_or_version_is_decoded(self) -> None:
        """Another revision or version is decoded in full, never served from the cache."""
        cache = _AnswerCache()
        cache.record(FRAME, body())
        moved = cache.record(FRAME, body(version=2, revision=8))
        assert (2, 8) == (moved.version, moved.revision)
        assert 8 == cache.record(FRAME, body(revision=8)).revision

    def test_age_not_last_is_decoded_every_time(self) -> None:
        """An answer with a key after age_ms (an echoed id) is decoded, and right."""
        cache = _AnswerCache()
        first = cache.record(FRAME, body(age_ms=5, id=1))
        second = cache.record(FRAME, body(age_ms=6, id=1))
        assert (5, 6) == (first.age_ms, second.age_ms)
        assert first.raw is not second.raw

    def test_error_answer_raises_its_class(self) -> None:
        """An error answer raises the error class, cached or not."""
        cache = _AnswerCache()
        cache.record(FRAME, body())
        error = {"ok": False, "error": {"code": "alias_not_found", "message": "no", "alias": "x"}}
        with pytest.raises(AliasNotFound):
            cache.record(FRAME, msgpack.packb(error))

    def test_garbage_is_unavailable(self) -> None:
        """Bytes that are not msgpack raise Unavailable."""
        with pytest.raises(Unavailable):
            _AnswerCache().record(FRAME, b"\xc1\xc1")


json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text()
maps = st.dictionaries(st.text(max_size=20), json_scalars, max_size=5)


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    """Version records with arbitrary names, unicode text, 64-bit numbers and tag maps."""
    return {
        "model": draw(st.text(min_size=1, max_size=40)),
        "version": draw(st.integers(1, 2**63 - 1)),
        "status": draw(st.sampled_from(["registered", "approved", "rejected", "archived"])),
        "artifact": {
            "uri": draw(st.text(max_size=60)),
            "sha256": draw(st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)),
            "size": draw(st.none() | st.integers(0, 2**63 - 1)),
            "format": draw(st.text(max_size=10)),
        },
        "lineage": {"run_id": draw(st.none() | st.text()), "parent_version": None},
        "params": draw(maps),
        "metrics": draw(st.dictionaries(st.text(max_size=10), st.floats(allow_nan=False))),
        "tags": draw(maps),
        "aliases": draw(st.lists(st.text(min_size=1, max_size=10), max_size=3)),
        "ref": draw(st.text(min_size=1, max_size=20)),
    }


class TestRoundTrip:
    @settings(max_examples=200, deadline=None)
    @given(
        record=records(),
        revision=st.integers(0, 2**64 - 1),
        ages=st.lists(st.integers(0, 2**63 - 1), min_size=1, max_size=4),
    )
    def test_every_answer_decodes_to_its_record(
        self, record: dict[str, Any], revision: int, ages: list[int]
    ) -> None:
        """Any answer, first or repeated with new ages, decodes to the record sent."""
        cache = _AnswerCache()
        for age in ages:
            answer = {"ok": True, "result": record, "revision": revision, "age_ms": age}
            decoded = cache.record(FRAME, msgpack.packb(answer))
            assert (record, revision, age) == (dict(decoded.raw), decoded.revision, decoded.age_ms)
            assert (record["version"], record["ref"]) == (decoded.version, decoded.ref)
            assert record["tags"] == dict(decoded.tags)
