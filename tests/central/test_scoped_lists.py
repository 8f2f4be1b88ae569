"""A token scoped to model globs sees nothing of other models on any list route: not in items,
not in page tokens, not as empty pages that say more exists."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from modelreg.central.appkeys import AUTH, REGISTRY
from tests.central.conftest import SHA, Api

#: Models in name order; the scoped reader (``a*``) may see the first two only.
MODELS = ("alpha", "apple", "bravo", "charlie", "delta")
VISIBLE = ("alpha", "apple")


def _positions(token: str | None) -> str:
    """The decoded payload of a page token (everything it tells its holder)."""
    if token is None:
        return ""
    payload = token.partition(".")[0]
    return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()


@pytest.fixture
async def scoped(api: Api) -> Api:
    """Two versions of each of :data:`MODELS`, and a reader token scoped to ``a*``."""
    registry = api.client.app[REGISTRY]
    for name in MODELS:
        await registry.create_model("seed", name)
        for n in (1, 2):
            await registry.register_version(
                "seed", name, artifact_uri=f"s3://m/{name}/{n}", sha256=SHA, run_id=f"{name}-{n}"
            )
    change = await api.client.app[AUTH].create("admin", "a-reader", "reader", ["a*"])
    assert change.secret is not None
    api.tokens["a-reader"] = change.secret
    return api


async def _walk(api: Api, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
    """Every page of ``path`` for the ``a*`` reader."""
    pages: list[dict[str, Any]] = []
    query = dict(params)
    while len(pages) < 50:
        status, body = await api.call("GET", path, params=query, token="a-reader")
        assert 200 == status, body
        pages.append(body)
        if body["next_page_token"] is None:
            break
        query = {**params, "page_token": body["next_page_token"]}
    return pages


class TestScopedLists:
    @pytest.mark.parametrize("limit", ["1", "2", "3"])
    async def test_models(self, scoped: Api, limit: str) -> None:
        """GET /v1/models pages only through in-scope models, never an empty page."""
        pages = await _walk(scoped, "/v1/models", {"limit": limit})
        names = [m["name"] for page in pages for m in page["items"]]
        hidden = [n for n in MODELS if n not in VISIBLE]
        leaked = [n for page in pages for n in hidden if n in _positions(page["next_page_token"])]
        empty = [page for page in pages if not page["items"]]
        expected = (list(VISIBLE), [], [])
        assert expected == (names, leaked, empty)

    @pytest.mark.parametrize("limit", ["1", "3", "4"])
    async def test_search(self, scoped: Api, limit: str) -> None:
        """GET /v1/versions pages only through in-scope versions, never an empty page."""
        pages = await _walk(scoped, "/v1/versions", {"limit": limit})
        seen = [(v["model"], v["version"]) for page in pages for v in page["items"]]
        hidden = [n for n in MODELS if n not in VISIBLE]
        leaked = [n for page in pages for n in hidden if n in _positions(page["next_page_token"])]
        empty = [page for page in pages if not page["items"]]
        expected = ([(m, n) for m in VISIBLE for n in (1, 2)], [], [])
        assert expected == (seen, leaked, empty)

    async def test_search_filters_combine_with_scope(self, scoped: Api) -> None:
        """A filter that matches only out-of-scope versions answers one empty, final page."""
        pages = await _walk(scoped, "/v1/versions", {"run_id": "bravo-1", "limit": "1"})
        expected = [{"items": [], "next_page_token": None}]
        assert expected == pages

    async def test_prefix_outside_scope(self, scoped: Api) -> None:
        """A prefix naming only out-of-scope models is one empty, final page."""
        pages = await _walk(scoped, "/v1/models", {"prefix": "b", "limit": "1"})
        expected = [{"items": [], "next_page_token": None}]
        assert expected == pages

    @pytest.mark.parametrize(
        "path",
        ["/v1/models/bravo/versions", "/v1/models/bravo/aliases/production/history"],
    )
    async def test_per_model_lists_outside_scope(self, scoped: Api, path: str) -> None:
        """The per-model lists of an out-of-scope model are 403, as the model itself is."""
        status, body = await scoped.call("GET", path, token="a-reader")
        expected = (403, "permission_denied")
        assert expected == (status, body["error"]["code"])

    @pytest.mark.parametrize("limit", ["1", "2", "3"])
    async def test_events(self, scoped: Api, limit: str) -> None:
        """GET /v1/events pages through the in-scope models' events only, never an empty page;
        its page tokens and ``last_revision`` carry revisions, never a model's name."""
        pages = await _walk(scoped, "/v1/events", {"limit": limit})
        subjects = [e["subject"] for p in pages for e in p["items"]]
        tokens = "".join(_positions(p["next_page_token"]) for p in pages)
        expected = (
            ["alpha", "alpha/1", "alpha/2", "apple", "apple/1", "apple/2"],
            [],
            [],
        )
        assert expected == (
            subjects,
            [p for p in pages if not p["items"]],
            [name for name in MODELS if name in tokens],
        )

    async def test_unscoped_reader_sees_everything(self, scoped: Api) -> None:
        """Without a scope the same walk sees every model."""
        status, body = await scoped.call("GET", "/v1/models", token="reader")
        expected = (200, list(MODELS))
        assert expected == (status, [m["name"] for m in body["items"]])

    async def test_glob_classes(self, scoped: Api) -> None:
        """Scope globs keep fnmatch's meaning inside the query ([!...], ?, *)."""
        change = await scoped.client.app[AUTH].create("admin", "odd", "reader", ["[!a]*", "?lph?"])
        assert change.secret is not None
        status, body = await scoped.call("GET", "/v1/models", token=change.secret)
        expected = (200, ["alpha", "bravo", "charlie", "delta"])
        assert expected == (status, [m["name"] for m in body["items"]])
