"""``GET /v1/events`` as a long-poll and ``GET /v1/events/stream`` (server-sent events):
filters, scopes, resuming, and the ways a stream ends."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import ClientResponse

from modelreg.central import event_routes
from modelreg.central.appkeys import AUTH, REGISTRY
from tests.central.conftest import Api


async def _model(api: Api, name: str) -> int:
    status, body = await api.call("POST", "/v1/models", json={"name": name})
    assert status == 201, body
    return int(body["revision"])


async def _scoped(api: Api, name: str, globs: list[str]) -> str:
    secret = (await api.client.app[AUTH].create("admin", name, "reader", globs)).secret
    assert secret is not None
    api.tokens[name] = secret
    return secret


async def _blocks(answer: ClientResponse, events: int) -> list[dict[str, str]]:
    """Server-sent blocks up to the ``events``-th one with data (each a field -> value map)."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    while sum(1 for b in blocks if "data" in b) < events:
        line = (await asyncio.wait_for(answer.content.readline(), 20)).decode().rstrip("\n")
        if not line:
            if current:
                blocks.append(current)
            current = {}
            continue
        name, _, value = line.partition(":")
        current[name or "comment"] = value.strip()
    return blocks


def _revisions(blocks: list[dict[str, str]]) -> list[int]:
    return [json.loads(b["data"])["revision"] for b in blocks if "data" in b]


def _stream(api: Api, token: str = "admin", query: str = "", last: int | None = None) -> Any:
    headers = {"Authorization": f"Bearer {api.tokens[token]}"}
    if last is not None:
        headers["Last-Event-ID"] = str(last)
    return api.client.get("/v1/events/stream" + query, headers=headers)


class TestLongPoll:
    async def test_it_answers_as_soon_as_an_event_exists(self, api: Api) -> None:
        """A long-poll after the head returns with the event committed while it waited."""
        head = api.client.app[REGISTRY].store.revision
        poll = asyncio.ensure_future(api.call("GET", f"/v1/events?after={head}&wait=30"))
        await asyncio.sleep(0.05)
        revision = await _model(api, "fraud")
        status, body = await poll
        expected = (200, [revision], revision)
        assert expected == (status, [e["revision"] for e in body["items"]], body["last_revision"])

    async def test_it_answers_empty_after_wait(self, api: Api) -> None:
        """Nothing committed: no items, the head as ``last_revision``, no page token."""
        head = api.client.app[REGISTRY].store.revision
        status, body = await api.call("GET", f"/v1/events?after={head}&wait=0.2")
        expected = (200, {"items": [], "next_page_token": None, "last_revision": head})
        assert expected == (status, body)

    async def test_filters_skip_events_but_move_the_position(self, api: Api) -> None:
        """Non-matching events are not returned, and ``last_revision`` passes them."""
        await _model(api, "fraud")
        await _model(api, "churn")
        status, body = await api.call("GET", "/v1/events?after=0&model=churn&action=model.*")
        expected = (200, [("model.create", "churn")], api.client.app[REGISTRY].store.revision)
        assert expected == (
            status,
            [(e["action"], e["subject"]) for e in body["items"]],
            body["last_revision"],
        )

    async def test_a_waiting_filter_ignores_other_models_events(self, api: Api) -> None:
        """A long-poll on one model does not answer for another model's event."""
        head = api.client.app[REGISTRY].store.revision
        poll = asyncio.ensure_future(
            api.call("GET", f"/v1/events?after={head}&wait=30&model=churn")
        )
        await asyncio.sleep(0.05)
        await _model(api, "fraud")
        await asyncio.sleep(0.05)
        revision = await _model(api, "churn")
        _, body = await poll
        assert [revision] == [e["revision"] for e in body["items"]]

    async def test_a_scoped_token_sees_only_its_models(self, api: Api) -> None:
        """A reader scoped to ``fr*`` gets its models' events and no token events."""
        await _scoped(api, "eu", ["fr*"])
        await _model(api, "fraud")
        await _model(api, "churn")
        _, body = await api.call("GET", "/v1/events", token="eu")
        assert [("model.create", "fraud")] == [(e["action"], e["subject"]) for e in body["items"]]

    async def test_a_scoped_token_naming_another_model_is_denied(self, api: Api) -> None:
        """``?model=churn`` from a token scoped to ``fr*`` is 403, as ``/v1/versions`` is."""
        await _scoped(api, "eu", ["fr*"])
        status, body = await api.call("GET", "/v1/events?model=churn", token="eu")
        expected = (403, "permission_denied")
        assert expected == (status, body["error"]["code"])

    @pytest.mark.parametrize(
        ("query", "field"),
        [
            ("wait=61", "wait"),
            ("wait=-1", "wait"),
            ("wait=abc", "wait"),
            ("after=x", "after"),
            ("action=version.registered", "action"),
            ("model=FRAUD", "model"),
            ("follow=1", "follow"),
        ],
    )
    async def test_bad_parameters_are_invalid_fields(
        self, api: Api, query: str, field: str
    ) -> None:
        """Out-of-range waits, unknown actions, bad globs and unknown parameters: 400."""
        status, body = await api.call("GET", f"/v1/events?{query}")
        expected = (400, "invalid_field", field)
        assert expected == (status, body["error"]["code"], body["error"]["field"])

    async def test_page_tokens_walk_a_filtered_log(self, api: Api) -> None:
        """Following ``next_page_token`` gives every matching event once."""
        for i in range(5):
            await _model(api, f"m{i}")
        seen, token = [], None
        while True:
            query = "/v1/events?limit=2&action=model.create"
            _, body = await api.call("GET", query + (f"&page_token={token}" if token else ""))
            seen += [e["subject"] for e in body["items"]]
            token = body["next_page_token"]
            if not token:
                break
        assert [f"m{i}" for i in range(5)] == seen


class TestStream:
    async def test_it_sends_events_with_their_revision_as_id(self, api: Api) -> None:
        """Each event is ``id: <revision>`` and ``data: <event JSON>``, oldest first."""
        await _model(api, "fraud")
        async with _stream(api, query="?after=0") as answer:
            blocks = await _blocks(answer, 2)
            head = answer.headers["Content-Type"]
        data = [b for b in blocks if "data" in b]
        expected = ("text/event-stream", [1, 2], ["1", "2"])
        assert expected == (head, _revisions(blocks), [b["id"] for b in data])

    async def test_it_opens_with_its_position(self, api: Api) -> None:
        """Without ``after`` it starts at the head and says so in an id-only first block,
        then sends what is committed next."""
        head = api.client.app[REGISTRY].store.revision
        async with _stream(api) as answer:
            first = (await _blocks_until(answer, lambda b: "id" in b))[-1]
            revision = await _model(api, "fraud")
            blocks = await _blocks(answer, 1)
        expected = (str(head), False, [revision])
        assert expected == (first["id"], "data" in first, _revisions(blocks))

    async def test_last_event_id_resumes_without_gap_or_repeat(self, api: Api) -> None:
        """Reconnecting with the last id seen gets exactly the events after it."""
        for i in range(3):
            await _model(api, f"m{i}")
        async with _stream(api, query="?after=0") as answer:
            first = _revisions(await _blocks(answer, 3))
        for i in range(3, 5):
            await _model(api, f"m{i}")
        head = api.client.app[REGISTRY].store.revision
        async with _stream(api, query="?after=0", last=first[-1]) as answer:
            rest = _revisions(await _blocks(answer, head - first[-1]))
        assert list(range(1, head + 1)) == first + rest

    async def test_a_scoped_token_streams_only_its_models(self, api: Api) -> None:
        """The stream of a token scoped to ``fr*`` holds only those models' events."""
        await _scoped(api, "eu", ["fr*"])
        async with _stream(api, "eu", "?after=0") as answer:
            await _model(api, "churn")
            await _model(api, "fraud")
            await _model(api, "churn-2")
            await _model(api, "fraud-2")
            blocks = await _blocks(answer, 2)
        subjects = [json.loads(b["data"])["subject"] for b in blocks if "data" in b]
        assert ["fraud", "fraud-2"] == subjects

    async def test_quiet_streams_get_keep_alives_that_carry_skipped_positions(
        self, api: Api, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """After a quiet spell a comment keeps the stream open; when the filter skipped
        events it carries their last revision as an id (no data: no event fires)."""
        monkeypatch.setattr(event_routes, "KEEPALIVE_S", 0.2)
        async with _stream(api, query="?model=churn") as answer:
            await _blocks_until(answer, lambda b: "id" in b)
            revision = await _model(api, "fraud")
            block = (await _blocks_until(answer, lambda b: "comment" in b))[-1]
        expected = (str(revision), False)
        assert expected == (block.get("id"), "data" in block)

    async def test_a_revoked_token_ends_its_stream(self, api: Api) -> None:
        """Revoking the token closes the stream at its next event."""
        await _scoped(api, "eu", ["*"])
        async with _stream(api, "eu") as answer:
            await _blocks_until(answer, lambda b: "id" in b)
            auth = api.client.app[AUTH]
            admin = auth.authenticate(f"Bearer {api.tokens['admin']}")
            await auth.revoke(admin, "eu")
            await _model(api, "fraud")
            rest = await asyncio.wait_for(answer.content.read(), 20)
        expected = (True, False)
        assert expected == (b"revoked" in rest, b"data:" in rest)

    async def test_a_bad_last_event_id_is_refused(self, api: Api) -> None:
        """``Last-Event-ID`` that is not a revision: 400 naming it."""
        headers = {"Authorization": f"Bearer {api.tokens['admin']}", "Last-Event-ID": "x"}
        async with api.client.get("/v1/events/stream", headers=headers) as answer:
            body = await answer.json()
        expected = (400, "Last-Event-ID")
        assert expected == (answer.status, body["error"]["field"])

    async def test_streams_are_capped(self, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
        """Past ``MAX_STREAMS`` open streams a new one gets 503 ``unavailable``."""
        monkeypatch.setattr(event_routes, "MAX_STREAMS", 1)
        async with _stream(api) as first:
            await _blocks_until(first, lambda b: "id" in b)
            status, body = await api.call("GET", "/v1/events/stream")
        expected = (503, "unavailable")
        assert expected == (status, body["error"]["code"])

    async def test_stopping_central_ends_open_streams(self, api: Api) -> None:
        """Closing the feed (central's shutdown) ends the stream instead of holding the stop."""
        from modelreg.central.appkeys import FEED

        async with _stream(api) as answer:
            await _blocks_until(answer, lambda b: "id" in b)
            api.client.app[FEED].close()
            rest = await asyncio.wait_for(answer.content.read(), 20)
        assert b"data:" not in rest


async def _blocks_until(answer: ClientResponse, done: Any) -> list[dict[str, str]]:
    """Blocks until one for which ``done(block)`` holds."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    while True:
        line = (await asyncio.wait_for(answer.content.readline(), 20)).decode().rstrip("\n")
        if line:
            name, _, value = line.partition(":")
            current[name or "comment"] = value.strip()
            continue
        if current:
            blocks.append(current)
            if done(current):
                return blocks
        current = {}
