"""``reg webhook …`` against a real central and a real receiver on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.cli.conftest import Reg, one_line_error
from tests.procs import wait_for
from tests.receiver import Answer, Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


def _create(reg: Reg, receiver: Receiver, *args: str) -> dict[str, object]:
    result = reg("webhook", "create", receiver.url(), *args, "--json")
    assert result.exit_code == 0, result.output
    created: dict[str, object] = json.loads(result.stdout)
    return created


class TestManage:
    def test_create_prints_the_secret_once(self, reg: Reg, receiver: Receiver) -> None:
        """The text answer shows the id and the secret; ``list`` and ``show`` never do."""
        result = reg("webhook", "create", receiver.url(), "--event", "version.*")
        assert result.exit_code == 0, result.output
        secret = result.stdout.strip().splitlines()[-1]
        webhook = result.stdout.split()[1]
        listed = reg("webhook", "list")
        shown = reg("webhook", "show", webhook)
        expected = (True, True, False, False)
        assert expected == (
            secret.startswith("whsec_"),
            webhook in listed.stdout,
            secret in listed.stdout,
            secret in shown.stdout,
        )

    def test_update_changes_filters_and_rotates(self, reg: Reg, receiver: Receiver) -> None:
        """``update`` replaces the filters, disables, enables and prints a rotated secret."""
        webhook = str(_create(reg, receiver)["id"])
        changed = reg("webhook", "update", webhook, "--event", "alias.*", "--model", "fr*")
        disabled = reg("webhook", "update", webhook, "--disable", "--json")
        rotated = reg("webhook", "update", webhook, "--enable", "--rotate-secret", "--json")
        assert 0 == changed.exit_code, changed.output
        expected = (["alias.*"], ["fr*"], False, True, True)
        answer = json.loads(rotated.stdout)
        assert expected == (
            answer["events"],
            answer["models"],
            json.loads(disabled.stdout)["enabled"],
            answer["enabled"],
            answer["secret"].startswith("whsec_"),
        )

    def test_delete_removes_it(self, reg: Reg, receiver: Receiver) -> None:
        """After ``delete`` the webhook is not found (exit 3)."""
        webhook = str(_create(reg, receiver)["id"])
        assert 0 == reg("webhook", "delete", webhook).exit_code
        gone = reg("webhook", "show", webhook)
        assert 3 == gone.exit_code
        one_line_error(gone)

    def test_a_link_local_url_is_refused(self, reg: Reg) -> None:
        """The metadata address is refused even with private targets allowed: exit 2."""
        result = reg("webhook", "create", "http://169.254.169.254/latest/meta-data/")
        assert 2 == result.exit_code
        assert "link-local" in one_line_error(result)

    def test_a_reader_may_not_manage_webhooks(self, reg: Reg) -> None:
        """Webhooks are for admins: exit 4."""
        result = reg("webhook", "list", token="reader")
        assert 4 == result.exit_code
        one_line_error(result)


class TestDeliveries:
    def test_test_reports_the_answer(self, reg: Reg, receiver: Receiver) -> None:
        """``test`` exits 0 on a 2xx and 1 (one line naming the status) otherwise."""
        webhook = str(_create(reg, receiver)["id"])
        ok = reg("webhook", "test", webhook)
        receiver.answer("/hook", Answer(500))
        failed = reg("webhook", "test", webhook)
        assert 0 == ok.exit_code, ok.output
        assert 1 == failed.exit_code
        assert "HTTP 500" in one_line_error(failed)

    def test_deliveries_list_and_show_every_attempt(self, reg: Reg, receiver: Receiver) -> None:
        """A delivery retried twice lists with 3 attempts; showing it lists each one."""
        receiver.answer("/hook", Answer(500), Answer(503))
        webhook = str(_create(reg, receiver, "--event", "model.*")["id"])
        reg.client().create_model("fraud")
        receiver.wait(3)

        def delivered() -> list[dict[str, object]] | None:
            items = json.loads(reg("webhook", "deliveries", webhook, "--json").stdout)["items"]
            return items if items and items[0]["state"] == "delivered" else None

        delivery = wait_for(delivered, what="the delivery")[0]
        shown = reg("webhook", "deliveries", webhook, str(delivery["id"]), "--json")
        table = reg("webhook", "deliveries", webhook)
        log = json.loads(shown.stdout)["attempt_log"]
        expected = (3, [500, 503, 200], True)
        assert expected == (
            delivery["attempts"],
            [a["status"] for a in log],
            "model.create" in table.stdout,
        )

    def test_redeliver_sends_the_same_message(self, reg: Reg, receiver: Receiver) -> None:
        """``redeliver`` posts the delivery's message again with the same ``webhook-id``."""
        webhook = str(_create(reg, receiver, "--event", "model.*")["id"])
        reg.client().create_model("fraud")
        first = receiver.wait(1)[0]
        delivery = wait_for(
            lambda: json.loads(reg("webhook", "deliveries", webhook, "--json").stdout)["items"],
            what="the delivery",
        )[0]
        result = reg("webhook", "redeliver", webhook, str(delivery["id"]))
        assert 0 == result.exit_code, result.output
        again = receiver.at()[-1]
        expected = (first.headers["webhook-id"], first.body)
        assert expected == (again.headers["webhook-id"], again.body)
