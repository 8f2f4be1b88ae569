"""Webhooks in process: the real app with real receivers on 127.0.0.1 (private targets allowed
by this module's config), signed deliveries in order, retries, disabling, safety, history."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from standardwebhooks import Webhook

from modelreg.central import webhooks as webhooks_module
from modelreg.central.app import create_app
from modelreg.central.appkeys import REGISTRY
from modelreg.central.config import CentralConfig
from tests.central.conftest import Api, loopback_config
from tests.receiver import Answer, Blackhole, Receiver, eventually

#: pytest-aiohttp's ``aiohttp_client`` (TestClient is generic only in newer aiohttp releases).
Client = Callable[..., Awaitable["TestClient[Any, Any]"]]


@pytest.fixture
def config(tmp_path: Path) -> CentralConfig:
    return loopback_config(tmp_path, webhook_retry_initial_s=0.02, webhook_timeout_s=2.0)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


async def _hook(api: Api, url: str, **fields: Any) -> dict[str, Any]:
    status, body = await api.call("POST", "/v1/webhooks", json={"url": url, **fields})
    assert status == 201, body
    return body


async def _models(api: Api, *names: str) -> list[int]:
    revisions = []
    for name in names:
        status, body = await api.call("POST", "/v1/models", json={"name": name})
        assert status == 201, body
        revisions.append(int(body["revision"]))
    return revisions


def _revisions(requests: list[Any]) -> list[int]:
    return [r.json()["data"]["revision"] for r in requests]


async def _deliveries(api: Api, webhook: str, query: str = "") -> list[dict[str, Any]]:
    status, body = await api.call("GET", f"/v1/webhooks/{webhook}/deliveries{query}")
    assert status == 200, body
    items: list[dict[str, Any]] = body["items"]
    return items


class TestSubscriptions:
    async def test_the_secret_is_shown_once(self, api: Api, receiver: Receiver) -> None:
        """Only the creation answers the secret; reading or listing never does."""
        created = await _hook(api, receiver.url())
        _, one = await api.call("GET", f"/v1/webhooks/{created['id']}")
        _, listed = await api.call("GET", "/v1/webhooks")
        expected = (True, False, False)
        assert expected == (
            created["secret"].startswith("whsec_"),
            "secret" in one,
            any("secret" in item for item in listed["items"]),
        )

    async def test_secrets_and_paths_stay_out_of_the_replicated_database(
        self, api: Api, receiver: Receiver, caplog: pytest.LogCaptureFixture
    ) -> None:
        """registry.db holds neither the secret nor the URL's path (a credential for many
        receivers); secrets.db holds both; no log line names either."""
        caplog.set_level(logging.DEBUG)
        path = "/services/T0123/B0456/XyZsecretpath"
        created = await _hook(api, receiver.url(path))
        await api.call("PATCH", f"/v1/webhooks/{created['id']}", json={"rotate_secret": True})
        data = api.config.data_dir
        registry = b"".join(p.read_bytes() for p in data.glob("registry.db*"))
        secrets = b"".join(p.read_bytes() for p in data.glob("secrets.db*"))
        logged = "\n".join(r.getMessage() for r in caplog.records)
        secret, needle = created["secret"].encode(), path.encode()
        expected = (False, False, True, True, False, False)
        assert expected == (
            secret in registry,
            needle in registry,
            secret in secrets,
            needle in secrets,
            created["secret"] in logged,
            path in logged,
        )

    async def test_every_change_answers_its_revision_and_hash(
        self, api: Api, receiver: Receiver
    ) -> None:
        """create, update and delete answer the revision and chain hash of their event."""
        created = await _hook(api, receiver.url())
        path = f"/v1/webhooks/{created['id']}"
        _, updated = await api.call("PATCH", path, json={"description": "x"})
        _, deleted = await api.call("DELETE", path)
        _, log = await api.call("GET", "/v1/events?action=webhook.*")
        expected = [(e["revision"], e["hash"]) for e in log["items"]]
        assert expected == [
            (a["revision"], a["revision_hash"]) for a in (created, updated, deleted)
        ]

    async def test_every_change_is_an_event_without_the_secret(
        self, api: Api, receiver: Receiver
    ) -> None:
        """create, update and delete each append an event naming the URL's origin; the chain
        still verifies."""
        created = await _hook(api, receiver.url("/p/secret"), events=["version.*"])
        webhook = created["id"]
        await api.call("PATCH", f"/v1/webhooks/{webhook}", json={"description": "ci"})
        await api.call("DELETE", f"/v1/webhooks/{webhook}")
        _, log = await api.call("GET", "/v1/events?action=webhook.*")
        _, audit = await api.call("GET", "/v1/audit/verify")
        origin = f"http://127.0.0.1:{receiver.port}"
        expected = (
            [
                ("webhook.create", webhook, origin, []),
                ("webhook.update", webhook, origin, ["description"]),
                ("webhook.delete", webhook, origin, []),
            ],
            True,
        )
        assert expected == (
            [
                (e["action"], e["subject"], e["details"]["url"], e["details"].get("changed", []))
                for e in log["items"]
            ],
            audit["ok"],
        )
        assert created["secret"] not in str(log)

    @pytest.mark.parametrize(
        ("body", "code", "field"),
        [
            ({"url": "ftp://example.com/x"}, "invalid_field", "url"),
            ({"url": "http://127.0.0.1:9/", "events": ["version.x"]}, "invalid_field", "events"),
            ({"url": "http://127.0.0.1:9/", "events": []}, "invalid_field", "events"),
            ({"url": "http://127.0.0.1:9/", "models": ["Bad Glob"]}, "invalid_field", "models"),
            ({"url": "http://127.0.0.1:9/", "secret": "whsec_AAAA"}, "invalid_field", "secret"),
            ({"url": "http://169.254.169.254/latest/meta-data/"}, "target_refused", "url"),
            ({"url": "http://[fe80::1]/hook"}, "target_refused", "url"),
            ({}, "invalid_field", "url"),
        ],
    )  # fmt: skip
    async def test_bad_subscriptions_are_refused_and_change_nothing(
        self, api: Api, body: dict[str, Any], code: str, field: str
    ) -> None:
        """Bad URLs, unknown actions, bad globs, unknown fields, and link-local targets
        (even with private targets allowed) get a 400 naming the field; nothing is written."""
        before = api.client.app[REGISTRY].store.revision
        status, answer = await api.call("POST", "/v1/webhooks", json=body)
        _, listed = await api.call("GET", "/v1/webhooks")
        expected = (400, code, field, before, [])
        assert expected == (
            status,
            answer["error"]["code"],
            answer["error"]["field"],
            api.client.app[REGISTRY].store.revision,
            listed["items"],
        )

    async def test_private_targets_are_refused_by_default(
        self, aiohttp_client: Client, tmp_path: Path
    ) -> None:
        """Without webhook_allow_private, loopback and private URLs are ``target_refused``."""
        config = CentralConfig(data_dir=tmp_path / "d", replica_url=None, heartbeat_interval_s=0)
        client = await aiohttp_client(create_app(config))
        headers = {"Authorization": f"Bearer {config.admin_token_file.read_text().strip()}"}
        codes = []
        for url in ("http://10.1.2.3/hook", "http://192.168.0.5/", "http://127.0.0.1:9/"):
            async with client.post("/v1/webhooks", json={"url": url}, headers=headers) as r:
                codes.append((r.status, (await r.json())["error"]["code"]))
        assert [(400, "target_refused")] * 3 == codes

    async def test_at_most_max_webhooks(
        self, api: Api, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Past the limit a creation is a 409 conflict."""
        monkeypatch.setattr(webhooks_module, "MAX_WEBHOOKS", 1)
        await _hook(api, receiver.url())
        status, body = await api.call("POST", "/v1/webhooks", json={"url": receiver.url()})
        expected = (409, "conflict")
        assert expected == (status, body["error"]["code"])

    async def test_unknown_webhooks_and_deliveries_are_not_found(self, api: Api) -> None:
        """A malformed or unknown id is ``webhook_not_found``; a delivery ``delivery_not_found``."""
        missing = "/v1/webhooks/wh_0000000000000000"
        created = await _hook(api, "http://127.0.0.1:9/")
        answers = [
            await api.call("GET", "/v1/webhooks/nope"),
            await api.call("PATCH", missing, json={"description": "x"}),
            await api.call("DELETE", missing),
            await api.call("GET", f"/v1/webhooks/{created['id']}/deliveries/999"),
            await api.call("POST", f"/v1/webhooks/{created['id']}/deliveries/x/redeliver"),
        ]
        expected = [
            (404, "webhook_not_found"),
            (404, "webhook_not_found"),
            (404, "webhook_not_found"),
            (404, "delivery_not_found"),
            (404, "delivery_not_found"),
        ]
        assert expected == [(s, b["error"]["code"]) for s, b in answers]

    async def test_a_scoped_admin_may_not_manage_webhooks(self, api: Api) -> None:
        """Webhooks see every model's events: a scoped admin gets 403."""
        from modelreg.central.appkeys import AUTH

        secret = (await api.client.app[AUTH].create("admin", "sub", "admin", ["a*"])).secret
        assert secret is not None
        status, body = await api.call("GET", "/v1/webhooks", token=secret)
        expected = (403, "permission_denied")
        assert expected == (status, body["error"]["code"])


class TestDelivery:
    async def test_matching_events_arrive_signed_and_in_order(
        self, api: Api, receiver: Receiver
    ) -> None:
        """Each matching event is one POST in the Standard Webhooks shape, verified by the
        reference library, with ``webhook-id`` ``<webhook>_<revision>``."""
        created = await _hook(api, receiver.url(), events=["model.create"], models=["f*"])
        revisions = await _models(api, "fraud", "churn", "fraud-2")
        got = await receiver.arrived(2)
        bodies = [Webhook(created["secret"]).verify(r.body, r.headers) for r in got]
        expected = (
            [revisions[0], revisions[2]],
            ["model.create"] * 2,
            [f"{created['id']}_{revisions[0]}", f"{created['id']}_{revisions[2]}"],
        )
        assert expected == (
            [b["data"]["revision"] for b in bodies],
            [b["type"] for b in bodies],
            [r.headers["webhook-id"] for r in got],
        )

    async def test_a_failing_receiver_gets_the_event_once_more_then_the_rest_in_order(
        self, api: Api, receiver: Receiver
    ) -> None:
        """500, 500, 500 then 200: four attempts of the first event (the last one succeeds),
        then each later event exactly once, in revision order; the attempts are logged."""
        receiver.answer("/hook", Answer(500), Answer(500), Answer(500))
        created = await _hook(api, receiver.url(), events=["model.*"])
        revisions = await _models(api, "a", "b", "c")
        got = await eventually(lambda: len(receiver.at()) >= 6 and receiver.at(), what="6 posts")
        await eventually(lambda: (d := receiver.at()) and len(d) == 6, what="no more")
        deliveries = await _deliveries(api, created["id"])
        first = deliveries[-1]
        expected = (
            [revisions[0]] * 4 + revisions[1:],
            ("delivered", 4, 200),
            [1] * 2,
        )
        assert expected == (
            _revisions(got),
            (first["state"], first["attempts"], first["last_attempt"]["status"]),
            [d["attempts"] for d in deliveries[:2]],
        )
        _, detail = await api.call("GET", f"/v1/webhooks/{created['id']}/deliveries/{first['id']}")
        assert [500, 500, 500, 200] == [a["status"] for a in detail["attempt_log"]]

    async def test_a_receiver_failing_past_the_window_is_disabled_with_an_event(
        self, aiohttp_client: Client, config: CentralConfig, receiver: Receiver
    ) -> None:
        """Always 500 for longer than webhook_retry_for_s: ``webhook.disable`` by central, the
        subscription disabled with the reason, and nothing more sent."""
        import dataclasses

        api = await _api(aiohttp_client, dataclasses.replace(config, webhook_retry_for_s=0.3))
        receiver.answer("/hook", *[Answer(500)] * 1000)
        created = await _hook(api, receiver.url(), events=["model.*"])
        await _models(api, "a")
        _, log = await eventually_call(api, "/v1/events?action=webhook.disable", "items")
        _, one = await api.call("GET", f"/v1/webhooks/{created['id']}")
        sent = len(receiver.at())
        await _models(api, "b")
        expected = ("central", False, True, sent)
        assert expected == (
            log["items"][0]["actor"],
            one["enabled"],
            "not delivered" in one["disabled_reason"],
            len(receiver.at()),
        )

    async def test_a_gone_receiver_is_disabled_at_once(self, api: Api, receiver: Receiver) -> None:
        """410 Gone means "stop sending": disabled after that one attempt."""
        receiver.answer("/hook", Answer(410))
        created = await _hook(api, receiver.url(), events=["model.*"])
        await _models(api, "a")
        _, log = await eventually_call(api, "/v1/events?action=webhook.disable", "items")
        expected = (1, created["id"], "410")
        assert expected == (
            len(receiver.at()),
            log["items"][0]["subject"],
            "410" in log["items"][0]["details"]["reason"] and "410",
        )

    async def test_redirects_are_not_followed(self, api: Api, receiver: Receiver) -> None:
        """A 302 is a failed attempt; the redirect target is never asked."""
        receiver.answer("/hook", Answer(302, headers={"Location": receiver.url("/other")}))
        created = await _hook(api, receiver.url(), events=["model.*"])
        await _models(api, "a")
        deliveries = await eventually_deliveries(
            api, created["id"], lambda d: d[0]["state"] == "delivered"
        )
        _, detail = await api.call(
            "GET", f"/v1/webhooks/{created['id']}/deliveries/{deliveries[0]['id']}"
        )
        first = detail["attempt_log"][0]
        expected = (0, 302, True)
        assert expected == (
            len(receiver.at("/other")),
            first["status"],
            "redirects are not followed" in first["error"],
        )

    async def test_an_endless_answer_is_read_only_up_to_the_cap(
        self, api: Api, receiver: Receiver
    ) -> None:
        """A receiver that answers 200 with a terabyte body: delivered, at most a few MiB
        were taken off the socket before central dropped the connection."""
        receiver.answer("/hook", Answer(200, endless=True))
        created = await _hook(api, receiver.url(), events=["model.*"])
        await _models(api, "a")
        deliveries = await eventually_deliveries(
            api, created["id"], lambda d: d and d[0]["state"] == "delivered"
        )
        await eventually(lambda: receiver.sent_bytes > 0, what="the body to start")
        expected = ("delivered", True, True)
        assert expected == (
            deliveries[0]["state"],
            len(deliveries[0]["last_attempt"]["response"]) <= 1024,
            receiver.sent_bytes < 64 * 1024 * 1024,
        )

    async def test_a_blackholed_receiver_does_not_hold_another_one(
        self, api: Api, receiver: Receiver
    ) -> None:
        """While one subscription's connects never complete, another gets every event and
        every write is acknowledged."""
        with Blackhole() as hole:
            assert hole.is_black()
            await _hook(api, hole.url(), events=["model.*"])
            await _hook(api, receiver.url(), events=["model.*"])
            revisions = await _models(api, *(f"m{i}" for i in range(20)))
            got = await eventually(
                lambda: len(receiver.at()) >= 20 and receiver.at(), what="20 deliveries"
            )
        assert revisions == _revisions(got)

    async def test_a_target_refused_at_delivery_time_is_not_contacted(
        self, aiohttp_client: Client, config: CentralConfig, receiver: Receiver
    ) -> None:
        """A subscription to ``localhost`` made while private targets were allowed: once
        central runs without the setting, every attempt resolves the name, refuses the
        loopback address and sends nothing (the DNS-rebinding check)."""
        import dataclasses

        url = f"http://localhost:{receiver.port}/hook"
        first = await _api(aiohttp_client, config)
        created = await _hook(first, url, events=["model.*"])
        await first.client.close()
        strict_config = dataclasses.replace(config, webhook_allow_private=False)
        strict = await _api(aiohttp_client, strict_config)
        await _models(strict, "a")
        deliveries = await eventually_deliveries(strict, created["id"], lambda d: d)
        expected = (0, True)
        assert expected == (len(receiver.at()), "refused" in deliveries[0]["last_attempt"]["error"])

    async def test_test_sends_a_signed_ping(self, api: Api, receiver: Receiver) -> None:
        """``test`` posts a signed ``webhook.test`` now and records it; no event is written."""
        created = await _hook(api, receiver.url(), events=["alias.*"])
        before = api.client.app[REGISTRY].store.revision
        status, delivery = await api.call("POST", f"/v1/webhooks/{created['id']}/test")
        ping = receiver.at()[-1]
        body = Webhook(created["secret"]).verify(ping.body, ping.headers)
        expected = (200, "delivered", "test", "webhook.test", before)
        assert expected == (
            status,
            delivery["state"],
            delivery["kind"],
            body["type"],
            api.client.app[REGISTRY].store.revision,
        )

    async def test_redeliver_sends_the_same_message_again(
        self, api: Api, receiver: Receiver
    ) -> None:
        """A redelivery carries the same ``webhook-id`` and body, a fresh signature, and is
        a new delivery pointing at the old one."""
        created = await _hook(api, receiver.url(), events=["model.*"])
        await _models(api, "a")
        first = (await receiver.arrived(1))[0]
        delivery = (await _deliveries(api, created["id"]))[0]
        path = f"/v1/webhooks/{created['id']}/deliveries/{delivery['id']}/redeliver"
        status, again = await api.call("POST", path)
        second = receiver.at()[-1]
        expected = (200, "redelivery", delivery["id"], first.headers["webhook-id"], first.body)
        assert expected == (
            status,
            again["kind"],
            again["redelivery_of"],
            second.headers["webhook-id"],
            second.body,
        )
        assert Webhook(created["secret"]).verify(second.body, second.headers)

    async def test_deliveries_page_newest_first_and_filter_by_state(
        self, api: Api, receiver: Receiver
    ) -> None:
        """Pages of deliveries follow ``next_page_token``; ``state`` filters."""
        created = await _hook(api, receiver.url(), events=["model.*"])
        await _models(api, "a", "b", "c")
        await receiver.arrived(3)
        webhook = created["id"]
        await eventually_deliveries(api, webhook, lambda d: len(d) == 3)
        _, page = await api.call("GET", f"/v1/webhooks/{webhook}/deliveries?limit=2")
        _, rest = await api.call(
            "GET", f"/v1/webhooks/{webhook}/deliveries?limit=2&page_token={page['next_page_token']}"
        )
        failed = await _deliveries(api, webhook, "?state=failed")
        revisions = [d["revision"] for d in page["items"] + rest["items"]]
        assert (sorted(revisions, reverse=True), [], None) == (
            revisions,
            failed,
            rest["next_page_token"],
        )

    async def test_a_rotated_secret_and_its_predecessor_both_sign(
        self, api: Api, receiver: Receiver
    ) -> None:
        """After a rotation each delivery verifies with the new and with the old secret."""
        created = await _hook(api, receiver.url(), events=["model.*"])
        _, rotated = await api.call(
            "PATCH", f"/v1/webhooks/{created['id']}", json={"rotate_secret": True}
        )
        await _models(api, "a")
        got = (await receiver.arrived(1))[0]
        assert created["secret"] != rotated["secret"]
        assert Webhook(rotated["secret"]).verify(got.body, got.headers)
        assert Webhook(created["secret"]).verify(got.body, got.headers)

    async def test_a_disabled_webhook_resumes_from_its_first_undelivered_event(
        self, api: Api, receiver: Receiver
    ) -> None:
        """Events committed while a webhook is disabled arrive, in order, once it is enabled."""
        created = await _hook(api, receiver.url(), events=["model.*"])
        path = f"/v1/webhooks/{created['id']}"
        await api.call("PATCH", path, json={"enabled": False})
        revisions = await _models(api, "a", "b")
        await api.call("PATCH", path, json={"enabled": True})
        assert revisions == _revisions(await receiver.arrived(2))

    async def test_a_restarted_central_delivers_what_it_had_not(
        self, aiohttp_client: Client, config: CentralConfig, receiver: Receiver
    ) -> None:
        """Events committed while the receiver was down are delivered by the next central on
        the same data directory, each acknowledged once."""
        first = await _api(aiohttp_client, config)
        receiver.answer("/hook", *[Answer(503)] * 3)
        await _hook(first, receiver.url(), events=["model.*"])
        revisions = await _models(first, "a", "b")
        await eventually(lambda: len(receiver.at()) >= 2, what="two failed attempts")
        await first.client.close()
        second = await _api(aiohttp_client, config)
        await eventually(
            lambda: [r for r in receiver.at() if r.json()["data"]["revision"] == revisions[1]],
            what="the second event",
        )
        ok = [r for r in receiver.at()][3:]
        assert revisions == _revisions(ok)
        assert second.client.app[REGISTRY].store.revision == revisions[-1]


async def _api(aiohttp_client: Client, config: CentralConfig) -> Api:
    client = await aiohttp_client(create_app(config))
    api = Api(client, config)
    api.tokens["admin"] = config.admin_token_file.read_text().strip()
    return api


async def eventually_call(api: Api, path: str, key: str) -> tuple[int, Any]:
    """``GET path`` until its ``key`` is non-empty."""
    answer: list[tuple[int, Any]] = []

    async def probe() -> None:
        answer[:] = [await api.call("GET", path)]

    for _ in range(1000):
        await probe()
        if answer[0][1].get(key):
            return answer[0]
        await _sleep()
    raise AssertionError(f"{path} stayed empty")


async def eventually_deliveries(
    api: Api, webhook: str, done: Callable[[list[dict[str, Any]]], Any]
) -> list[dict[str, Any]]:
    for _ in range(1000):
        found = await _deliveries(api, webhook)
        if found and done(found):
            return found
        await _sleep()
    raise AssertionError("deliveries did not get there")


async def _sleep() -> None:
    import asyncio

    await asyncio.sleep(0.02)
