"""Times and page tokens in query strings: only RFC 3339 with an offset, only tokens central
issued; anything else is a 400 naming the parameter, never a 500, and changes nothing."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from modelreg.central.appkeys import REGISTRY
from modelreg.central.auth import Auth
from modelreg.central.config import CentralConfig
from tests.central.conftest import Api, db_state

ALIAS = "/v1/models/fraud/aliases/production"
RESOLVE = "/v1/resolve/fraud/production"
SEARCH = "/v1/versions"
#: Every list route that pages, with the kind of position its tokens hold.
LISTS = (
    "/v1/models",
    "/v1/models/fraud/versions",
    "/v1/models/fraud/aliases/production/history",
    "/v1/versions",
    "/v1/events",
)
#: (route, parameter) of every time in a query string.
TIMES = ((ALIAS, "at"), (RESOLVE, "at"), (SEARCH, "created_after"), (SEARCH, "created_before"))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _code_and_field(body: Any) -> tuple[str | None, str | None]:
    error = body.get("error", {}) if isinstance(body, dict) else {}
    return error.get("code"), error.get("field")


async def _pages(api: Api, path: str, token: str = "admin") -> list[dict[str, Any]]:
    """Every page of ``path`` at one item a page."""
    pages: list[dict[str, Any]] = []
    params: dict[str, str] = {"limit": "1"}
    while True:
        status, body = await api.call("GET", path, params=params, token=token)
        assert 200 == status, body
        pages.append(body)
        if body["next_page_token"] is None or len(pages) > 50:
            return pages
        params = {"limit": "1", "page_token": body["next_page_token"]}


class TestTimes:
    @pytest.mark.parametrize(
        "value",
        [
            "0001-01-01T00:00:00+01:00",  # before year 1 once in UTC: OverflowError
            "9999-12-31T23:59:59-01:00",  # after year 9999 once in UTC
            "2026-W49-2",  # an ISO week date: not RFC 3339
            "2026-11-27T09:00:00",  # no offset: which zone?
            "2026-11-27",  # a date alone
            "2026-11-27T09:00Z",  # no seconds
            "2026-11-27T09:00:00+0100",  # offset without colon
            "2026-11-27T25:00:00Z",
            "2026-02-30T09:00:00Z",
            "20261127T090000Z",  # basic format
            "2026-11-27T09:00:00.Z",
            " 2026-11-27T09:00:00Z",
        ],
    )
    @pytest.mark.parametrize(("path", "name"), TIMES)
    async def test_refused(self, seeded: Api, path: str, name: str, value: str) -> None:
        """A time that is not RFC 3339 with an offset (or is out of range) is 400 naming it."""
        before = db_state(seeded.config)
        status, body = await seeded.call("GET", path, params={name: value}, token="reader")
        expected = (400, ("invalid_field", name), before)
        assert expected == (status, _code_and_field(body), db_state(seeded.config))

    @pytest.mark.parametrize(
        "value",
        [
            "2999-01-01T00:00:00Z",
            "2999-01-01t00:00:00z",
            "2999-01-01T01:30:00+01:30",
            "2999-01-01T00:00:00.123456789-00:00",
            "9999-12-31T23:59:59Z",
            "0001-01-01T00:00:00Z",
        ],
    )
    async def test_rfc3339_accepted(self, seeded: Api, value: str) -> None:
        """RFC 3339 times with Z or an offset, fractions up to nanoseconds, are answered."""
        status, body = await seeded.call("GET", SEARCH, params={"created_after": value})
        expected = 200
        assert expected == status, body

    async def test_offset_is_applied(self, seeded: Api) -> None:
        """The same instant written with two offsets gives the same answer."""
        _, utc = await seeded.call("GET", ALIAS, params={"at": "2999-01-01T00:00:00Z"})
        _, shifted = await seeded.call("GET", ALIAS, params={"at": "2999-01-01T05:00:00+05:00"})
        expected = utc
        assert expected == shifted


class TestPageTokens:
    @pytest.mark.parametrize("path", LISTS)
    async def test_deep_nesting_is_refused(self, seeded: Api, path: str) -> None:
        """A token decoding to 1,500 nested arrays is 400 invalid_field, not a RecursionError."""
        token = _b64(b"[" * 1500)
        status, body = await seeded.call("GET", path, params={"page_token": token})
        expected = (400, ("invalid_field", "page_token"))
        assert expected == (status, _code_and_field(body))

    @pytest.mark.parametrize(
        ("path", "payload"),
        [
            ("/v1/models", {"k": "models", "p": "a"}),
            ("/v1/models/fraud/versions", {"k": "versions", "p": 1}),
            ("/v1/models/fraud/aliases/production/history", {"k": "history", "p": 99}),
            ("/v1/versions", {"k": "search", "p": ["fraud", 1]}),
            ("/v1/events", {"k": "events", "p": 1}),
        ],
    )
    async def test_forged_tokens_are_refused(
        self, seeded: Api, path: str, payload: dict[str, Any]
    ) -> None:
        """A well-formed position central did not issue (today's token format) is refused."""
        token = _b64(json.dumps(payload, separators=(",", ":")).encode())
        status, body = await seeded.call("GET", path, params={"page_token": token})
        expected = (400, ("invalid_field", "page_token"))
        assert expected == (status, _code_and_field(body))

    @pytest.mark.parametrize("path", LISTS)
    async def test_issued_tokens_page_through(self, seeded: Api, path: str) -> None:
        """The tokens central issues take every list to its end, one item a page."""
        for name in ("alpha", "zeta"):
            await seeded.call("POST", "/v1/models", json={"name": name})
        pages = await _pages(seeded, path)
        expected = (True, None)
        assert expected == (len(pages) > 1, pages[-1]["next_page_token"])

    async def test_tampered_token_is_refused(self, seeded: Api) -> None:
        """Changing any one character of an issued token makes it invalid."""
        _, first = await seeded.call("GET", SEARCH, params={"limit": "1"})
        token = first["next_page_token"]
        refused = 0
        for index in range(len(token)):
            flipped = "A" if token[index] != "A" else "B"
            forged = token[:index] + flipped + token[index + 1 :]
            status, _ = await seeded.call("GET", SEARCH, params={"page_token": forged})
            refused += status == 400
        expected = len(token)
        assert expected == refused

    async def test_token_of_another_list_is_refused(self, seeded: Api) -> None:
        """A token issued for the search is refused by the model list."""
        _, first = await seeded.call("GET", SEARCH, params={"limit": "1"})
        status, body = await seeded.call(
            "GET", "/v1/models", params={"page_token": first["next_page_token"]}
        )
        expected = (400, ("invalid_field", "page_token"))
        assert expected == (status, _code_and_field(body))

    async def test_key_is_not_in_the_registry(self, seeded: Api) -> None:
        """The key that signs page tokens is never in the replicated registry.db."""
        pages = await _pages(seeded, SEARCH)
        data = seeded.config.registry_db.read_bytes()
        wal = seeded.config.registry_db.with_name("registry.db-wal")
        data += wal.read_bytes() if wal.exists() else b""
        key = seeded.client.app[REGISTRY].page_tokens.key
        expected = (True, False, False)
        assert expected == (
            len(pages) > 1,
            key in data,
            key.hex().encode() in data,
        )

    async def test_key_survives_a_restart(self, config: CentralConfig) -> None:
        """The key is kept in secrets.db: a restarted central takes the tokens it issued."""
        keys = []
        for _ in range(2):
            auth = Auth(config)
            await auth.open()
            keys.append(auth.page_token_key)
            await auth.close()
        expected = (keys[0], 32)
        assert expected == (keys[1], len(keys[0]))
