"""A table of invalid requests: each gets its exact status and code, and the registry and the
secrets database are left exactly as they were (revision and row counts)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelreg.central.config import CentralConfig
from modelreg.central.openapi import BODIES
from tests.central.conftest import Api, db_state

VERSIONS = "/v1/models/fraud/versions"
ALIAS = "/v1/models/fraud/aliases/staging"
OK_VERSION = {"artifact_uri": "s3://models/fraud/9", "sha256": "f" * 64}


@dataclass(frozen=True)
class Bad:
    id: str
    method: str
    path: str
    status: int
    code: str
    json: Any = None
    data: bytes | None = None
    params: dict[str, str] | list[tuple[str, str]] = field(default_factory=dict)
    #: The ``field`` the error names, when it names one.
    field: str | None = None
    #: Send ``data`` with chunked transfer encoding (no Content-Length).
    chunked: bool = False


def _version(**changes: Any) -> dict[str, Any]:
    return {**OK_VERSION, **changes}


CASES = (
    Bad("malformed json", "POST", "/v1/models", 400, "invalid_json", data=b'{"name": '),
    Bad("not utf-8", "POST", "/v1/models", 400, "invalid_json", data=b"\xff\xfe{}"),
    Bad("nested too deep", "POST", "/v1/models", 400, "invalid_json", data=b"[" * 200_000),
    Bad("array body", "POST", "/v1/models", 400, "invalid_field", json=[1], field="body"),
    Bad("string body", "POST", "/v1/models", 400, "invalid_field", json="x", field="body"),
    Bad("name not a string", "POST", "/v1/models", 400, "invalid_field", {"name": 5}, field="name"),
    Bad("name missing", "POST", "/v1/models", 400, "invalid_field", {"owner": "x"}, field="name"),
    Bad(
        "unknown field",
        "POST",
        "/v1/models",
        400,
        "invalid_field",
        {"name": "a", "x": 1},
        field="x",
    ),
    Bad("upper-case name", "POST", "/v1/models", 400, "invalid_name", {"name": "Fraud"}),
    Bad("name with space", "POST", "/v1/models", 400, "invalid_name", {"name": "a b"}),
    Bad("name too long", "POST", "/v1/models", 400, "invalid_name", {"name": "a" * 129}),
    Bad(
        "tags not object",
        "POST",
        "/v1/models",
        400,
        "invalid_field",
        {"name": "a", "tags": []},
        field="tags",
    ),
    Bad(
        "tag value number",
        "POST",
        "/v1/models",
        400,
        "invalid_field",
        {"name": "a", "tags": {"k": 1}},
        field="tags.k",
    ),
    Bad(
        "patch owner number",
        "PATCH",
        "/v1/models/fraud",
        400,
        "invalid_field",
        {"owner": 1},
        field="owner",
    ),
    Bad("sha256 short", "POST", VERSIONS, 400, "invalid_sha256", _version(sha256="abc")),
    Bad("sha256 upper-case", "POST", VERSIONS, 400, "invalid_sha256", _version(sha256="A" * 64)),
    Bad("sha256 not hex", "POST", VERSIONS, 400, "invalid_sha256", _version(sha256="g" * 64)),
    Bad(
        "sha256 missing",
        "POST",
        VERSIONS,
        400,
        "invalid_field",
        {"artifact_uri": "s3://a/b"},
        field="sha256",
    ),
    Bad("uri scheme ftp", "POST", VERSIONS, 400, "invalid_uri", _version(artifact_uri="ftp://h/m")),
    Bad(
        "uri without scheme", "POST", VERSIONS, 400, "invalid_uri", _version(artifact_uri="/tmp/m")
    ),
    Bad("size a string", "POST", VERSIONS, 400, "invalid_field", _version(size="12"), field="size"),
    Bad("size negative", "POST", VERSIONS, 400, "invalid_field", _version(size=-1), field="size"),
    Bad(
        "size over int64",
        "POST",
        VERSIONS,
        400,
        "invalid_field",
        _version(size=2**64),
        field="size",
    ),
    Bad("size a bool", "POST", VERSIONS, 400, "invalid_field", _version(size=True), field="size"),
    Bad(
        "metric not a number",
        "POST",
        VERSIONS,
        400,
        "invalid_field",
        _version(metrics={"auc": "hi"}),
        field="metrics.auc",
    ),
    Bad(
        "params not object",
        "POST",
        VERSIONS,
        400,
        "invalid_field",
        _version(params=[1]),
        field="params",
    ),
    Bad(
        "parent version zero",
        "POST",
        VERSIONS,
        400,
        "invalid_field",
        _version(parent_version=0),
        field="parent_version",
    ),
    Bad(
        "version path not a number", "GET", VERSIONS + "/abc", 400, "invalid_field", field="version"
    ),
    Bad(
        "version path zero", "POST", VERSIONS + "/0/approve", 400, "invalid_field", field="version"
    ),
    Bad(
        "comment not a string",
        "POST",
        VERSIONS + "/2/approve",
        400,
        "invalid_field",
        {"comment": 1},
        field="comment",
    ),
    Bad(
        "alias version a string",
        "PUT",
        ALIAS,
        400,
        "invalid_field",
        {"version": "1"},
        field="version",
    ),
    Bad(
        "alias expected a string",
        "PUT",
        ALIAS,
        400,
        "invalid_field",
        {"version": 1, "expected": "3"},
        field="expected",
    ),
    Bad(
        "alias name invalid",
        "PUT",
        "/v1/models/fraud/aliases/Prod!",
        400,
        "invalid_name",
        {"version": 1},
    ),
    Bad(
        "delete expected garbage",
        "DELETE",
        ALIAS,
        400,
        "invalid_field",
        params={"expected": "x"},
        field="expected",
    ),
    Bad(
        "limit zero",
        "GET",
        "/v1/models",
        400,
        "invalid_field",
        params={"limit": "0"},
        field="limit",
    ),
    Bad(
        "limit 5000",
        "GET",
        "/v1/models",
        400,
        "invalid_field",
        params={"limit": "5000"},
        field="limit",
    ),
    Bad(
        "limit not a number",
        "GET",
        VERSIONS,
        400,
        "invalid_field",
        params={"limit": "ten"},
        field="limit",
    ),
    Bad(
        "bad page_token",
        "GET",
        "/v1/models",
        400,
        "invalid_field",
        params={"page_token": "%%%garbage"},
        field="page_token",
    ),
    Bad(
        "bad search page_token",
        "GET",
        "/v1/versions",
        400,
        "invalid_field",
        params={"page_token": "nope"},
        field="page_token",
    ),
    Bad(
        "bad events page_token",
        "GET",
        "/v1/events",
        400,
        "invalid_field",
        params={"page_token": "x"},
        field="page_token",
    ),
    Bad(
        "events after negative",
        "GET",
        "/v1/events",
        400,
        "invalid_field",
        params={"after": "-1"},
        field="after",
    ),
    Bad("bad at", "GET", ALIAS, 400, "invalid_field", params={"at": "yesterday"}, field="at"),
    Bad(
        "bad resolve at",
        "GET",
        "/v1/resolve/fraud/staging",
        400,
        "invalid_field",
        params={"at": "2026-13-01"},
        field="at",
    ),
    Bad(
        "bad created_after",
        "GET",
        "/v1/versions",
        400,
        "invalid_field",
        params={"created_after": "soon"},
        field="created_after",
    ),
    Bad(
        "bad status filter",
        "GET",
        VERSIONS,
        400,
        "invalid_field",
        params={"status": "live"},
        field="status",
    ),
    Bad(
        "tag without =",
        "GET",
        "/v1/versions",
        400,
        "invalid_field",
        params={"tag": "k"},
        field="tag",
    ),
    Bad(
        "one tag key with two values",
        "GET",
        "/v1/versions",
        400,
        "invalid_field",
        params=[("tag", "team=risk"), ("tag", "team=growth")],
        field="tag",
    ),
    Bad(
        "unknown query parameter",
        "GET",
        "/v1/models",
        400,
        "invalid_field",
        params={"limt": "1"},
        field="limt",
    ),
    Bad(
        "token role unknown",
        "POST",
        "/v1/tokens",
        400,
        "invalid_field",
        {"name": "t", "role": "god"},
        field="role",
    ),
    Bad(
        "token name invalid",
        "POST",
        "/v1/tokens",
        400,
        "invalid_name",
        {"name": "T!", "role": "reader"},
    ),
    Bad(
        "token models not list",
        "POST",
        "/v1/tokens",
        400,
        "invalid_field",
        {"name": "t", "role": "reader", "models": "a*"},
        field="models",
    ),
    Bad(
        "token glob invalid",
        "POST",
        "/v1/tokens",
        400,
        "invalid_field",
        {"name": "t", "role": "reader", "models": ["A B"]},
        field="models",
    ),
    Bad(
        "body over 1 MiB",
        "POST",
        VERSIONS,
        413,
        "payload_too_large",
        data=b"{" + b" " * (1024 * 1024) + b"}",
    ),
    Bad(
        "chunked body over 1 MiB",
        "POST",
        VERSIONS,
        413,
        "payload_too_large",
        data=b"{" + b" " * (1024 * 1024) + b"}",
        chunked=True,
    ),
    Bad(
        "description over 1 MiB",
        "PATCH",
        "/v1/models/fraud",
        413,
        "payload_too_large",
        {"description": "x" * (1024 * 1024)},
    ),
)


async def _chunks(data: bytes | None, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """``data`` as an async stream: aiohttp sends it chunked, without a Content-Length."""
    for start in range(0, len(data or b""), size):
        yield (data or b"")[start : start + size]


def _secrets_count(config: CentralConfig) -> int:
    conn = sqlite3.connect(f"file:{config.secrets_db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM tokens").fetchone()[0])
    finally:
        conn.close()


class TestBadInput:
    @pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
    async def test_rejected_and_nothing_changes(self, seeded: Api, case: Bad) -> None:
        """The request gets its status and code (and field), and no database row changes."""
        before = (db_state(seeded.config), _secrets_count(seeded.config))
        headers = {"Content-Type": "application/json"} if case.data is not None else None
        status, body = await seeded.call(
            case.method,
            case.path,
            json=case.json,
            data=_chunks(case.data) if case.chunked else case.data,
            params=case.params or None,
            headers=headers,
        )
        error = body.get("error", {}) if isinstance(body, dict) else {}
        after = (db_state(seeded.config), _secrets_count(seeded.config))
        expected = (case.status, case.code, case.field, before)
        assert expected == (
            status,
            error.get("code"),
            error.get("field") if case.field is not None else None,
            after,
        )

    async def test_errors_carry_a_message(self, seeded: Api) -> None:
        """Every error body has a human message that names the problem."""
        _, body = await seeded.call("POST", VERSIONS, json=_version(size="12"))
        expected = True
        assert expected == ("size" in body["error"]["message"])


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
_FIELDS = sorted(
    {
        name
        for schema in ("VersionCreate", "AliasSet", "ModelCreate")
        for name in BODIES[schema]["properties"]
    }
)
_BODIES = st.dictionaries(st.sampled_from(_FIELDS) | st.text(max_size=8), _JSON, max_size=6) | _JSON


class TestFuzz:
    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        path=st.sampled_from(
            ["/v1/models", VERSIONS, ALIAS, "/v1/models/fraud", VERSIONS + "/2/approve"]
        ),
        body=_BODIES,
    )
    async def test_random_bodies_never_crash(self, seeded: Api, path: str, body: Any) -> None:
        """Any JSON body on a write route gets a 2xx or a 4xx error body, never a 500."""
        method = {ALIAS: "PUT", "/v1/models/fraud": "PATCH"}.get(path, "POST")
        status, answer = await seeded.call(method, path, json=body)
        ok = status < 300 or (400 <= status < 500 and "code" in answer["error"])
        expected = True
        assert expected == ok, (status, answer)
