"""The event feed: committed events in order, from memory or from the log, filtered; waiters
woken by commits; filters validated."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelreg.central.config import CentralConfig
from modelreg.central.feed import (
    ACTIONS,
    EventFeed,
    EventFilter,
    FeedEvent,
    action_globs,
    event_model,
    model_globs,
)
from modelreg.central.registry import TOKEN_ACTIONS, WEBHOOK_ACTIONS, Registry
from modelreg.errors import InvalidField


@pytest.fixture
async def registry(tmp_path: Path) -> AsyncIterator[Registry]:
    config = CentralConfig(data_dir=tmp_path, replica_url=None, heartbeat_interval_s=0)
    async with Registry(config) as reg:
        yield reg


async def _models(registry: Registry, *names: str) -> None:
    for name in names:
        await registry.create_model("alice", name)


def _event(action: str, subject: str, revision: int = 1) -> FeedEvent:
    return FeedEvent(
        {
            "revision": revision,
            "at": "t",
            "actor": "a",
            "action": action,
            "subject": subject,
            "details": {},
            "prev_hash": "",
            "hash": "",
        }
    )


class TestModels:
    @pytest.mark.parametrize(
        ("action", "subject", "model"),
        [
            ("model.create", "fraud", "fraud"),
            ("version.register", "fraud/3", "fraud"),
            ("alias.set", "fraud@production", "fraud"),
            ("token.create", "ci", None),
            ("webhook.create", "wh_0123456789abcdef", None),
        ],
    )
    def test_an_event_names_its_model(self, action: str, subject: str, model: str | None) -> None:
        """The model comes from the subject; token and webhook events have none."""
        assert model == event_model(action, subject)

    def test_every_action_is_listed(self) -> None:
        """The list of actions is every action policy.py writes, and the token and webhook
        actions the registry writes."""
        import re

        from modelreg.central import policy

        source = Path(policy.__file__).read_text()
        written = set(re.findall(r'"((?:model|version|alias)\.[a-z]+)"', source))
        written |= {f"alias.{a}" for a in ("set", "delete", "rollback")}
        expected = set(ACTIONS)
        assert expected == written | set(TOKEN_ACTIONS) | set(WEBHOOK_ACTIONS)


class TestFilters:
    def test_actions_models_and_scope_all_apply(self) -> None:
        """An event passes when its action matches and its model is in both globs' reach."""
        flt = EventFilter(actions=("version.*",), models=("fraud*",), scope=("fraud-eu",))
        expected = [True, False, False, False]
        assert expected == [
            flt.matches(_event("version.register", "fraud-eu/1")),
            flt.matches(_event("alias.set", "fraud-eu@production")),
            flt.matches(_event("version.register", "fraud-us/1")),
            flt.matches(_event("token.create", "ci")),
        ]

    def test_an_empty_filter_matches_everything(self) -> None:
        """No globs: every event, those of no model too."""
        assert EventFilter().matches(_event("token.create", "ci"))

    @pytest.mark.parametrize(
        "bad", ["version.registered", "Version.*", "nothing.*", "x" * 200, "", ["ok", 3]]
    )
    def test_an_action_glob_that_matches_nothing_is_refused(self, bad: object) -> None:
        """A typo would silently match nothing: refused, naming the field."""
        with pytest.raises(InvalidField) as caught:
            action_globs(bad if isinstance(bad, list) else [bad], "events")
        assert "events" == caught.value.details["field"]

    def test_globs_are_kept_once_in_order(self) -> None:
        """Duplicates go; a single string is one glob."""
        expected = (("alias.*", "version.register"), ("fraud-*",))
        assert expected == (
            action_globs(["alias.*", "version.register", "alias.*"]),
            model_globs("fraud-*"),
        )


class TestReads:
    async def test_events_come_in_order_from_memory_and_from_the_log(
        self, registry: Registry
    ) -> None:
        """A feed that saw every commit serves them from memory; a fresh feed of the same
        store (central restarted) serves the same events from the log, byte for byte."""
        feed = EventFeed(registry.store)
        await _models(registry, "a", "b", "c")
        from_memory = await feed.read(0, 100)
        later = EventFeed(registry.store)
        from_log = await later.read(0, 100)
        expected = ([1, 2, 3], True)
        assert expected == (
            [e.revision for e in from_memory.items],
            [e.json for e in from_memory.items] == [e.json for e in from_log.items],
        )

    async def test_a_read_stops_at_its_limit_and_says_there_is_more(
        self, registry: Registry
    ) -> None:
        """``limit`` matches cut the read short: ``more`` and ``last`` say where to go on."""
        feed = EventFeed(registry.store)
        await _models(registry, "a", "b", "c")
        first = await feed.read(0, 2)
        rest = await feed.read(first.last, 2)
        expected = ([1, 2], True, [3], False)
        assert expected == (
            [e.revision for e in first.items],
            first.more,
            [e.revision for e in rest.items],
            rest.more,
        )

    async def test_skipped_events_still_move_the_position(self, registry: Registry) -> None:
        """A filter that matches nothing returns no items but the last revision it examined."""
        feed = EventFeed(registry.store)
        await _models(registry, "a", "b")
        batch = await feed.read(0, 10, EventFilter(models=("zzz",)))
        expected = ([], 2, False)
        assert expected == (batch.items, batch.last, batch.more)

    async def test_a_rare_match_is_scanned_for_in_bounded_steps(self, registry: Registry) -> None:
        """With ``scan`` rows examined at most, a long log is walked in several reads."""
        feed = EventFeed(registry.store, capacity=2)
        await _models(registry, *(f"m{i}" for i in range(7)), "target")
        flt = EventFilter(models=("target",))
        steps, after, found = 0, 0, []
        while True:
            batch = await feed.read(after, 10, flt, scan=3)
            steps, after, found = steps + 1, batch.last, found + batch.items
            if not batch.more:
                break
        expected = (3, ["target"])
        assert expected == (steps, [e.model for e in found])

    async def test_a_waiter_wakes_at_the_next_commit(self, registry: Registry) -> None:
        """``wait`` returns True as soon as an event after its revision is committed."""
        feed = EventFeed(registry.store)
        waiting = asyncio.ensure_future(feed.wait(feed.head, 30))
        await asyncio.sleep(0)
        await _models(registry, "a")
        expected = (True, False)
        assert expected == (await waiting, await feed.wait(feed.head, 0.01))

    async def test_closing_wakes_every_waiter(self, registry: Registry) -> None:
        """``close`` ends waits at once (central stopping)."""
        feed = EventFeed(registry.store)
        waiting = asyncio.ensure_future(feed.wait(feed.head, 30))
        await asyncio.sleep(0)
        feed.close()
        expected = (False, True)
        assert expected == (await waiting, feed.closed)

    async def test_get_finds_one_revision(self, registry: Registry) -> None:
        """``get`` returns the event of a revision, None past the head."""
        feed = EventFeed(registry.store)
        await _models(registry, "a", "b")
        found = await feed.get(2)
        expected = ("b", None, None)
        assert expected == (
            found.model if found else None,
            await feed.get(3),
            await feed.get(0),
        )

    async def test_the_webhook_body_is_the_standard_shape(self, registry: Registry) -> None:
        """The payload is ``{"type", "timestamp", "data": <event>}`` as compact JSON."""
        import json

        feed = EventFeed(registry.store)
        await _models(registry, "a")
        event = (await feed.read(0, 1)).items[0]
        body = json.loads(event.payload)
        expected = ("model.create", event.record["at"], event.record)
        assert expected == (body["type"], body["timestamp"], body["data"])
