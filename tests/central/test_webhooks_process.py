"""Events pushed by a real ``reg central serve`` to real receivers on 127.0.0.1: signatures a
receiver verifies, retries, kill -9, scoped streams, refused targets, resumed streams."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from modelreg.central.client import CentralClient
from modelreg.errors import TargetRefused
from tests.procs import CentralProc, free_port, start_central, stop_process, wait_for
from tests.receiver import Answer, Receiver

pytestmark = pytest.mark.integration

API_DOCS = Path(__file__).resolve().parents[2] / "docs" / "API.md"
#: Private targets allowed (the receivers are on loopback), quick retries.
WEBHOOK_ENV = {"REG_WEBHOOK_RETRY_INITIAL_S": "0.05", "REG_WEBHOOK_TIMEOUT_S": "3"}
ALLOW = ["--webhook-allow-private"]


def _central(data: Path, port: int | None = None, allow: bool = True) -> CentralProc:
    return start_central(data, env=WEBHOOK_ENV, extra_args=ALLOW if allow else (), port=port)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


@pytest.fixture
def central(tmp_path: Path) -> Iterator[CentralProc]:
    proc = _central(tmp_path / "central")
    try:
        yield proc
    finally:
        proc.stop()


def _client(central: CentralProc, token: str | None = None) -> CentralClient:
    return CentralClient(central.url, token or central.admin_token)


def _models(client: CentralClient, *names: str) -> list[int]:
    return [int(client.create_model(name)["revision"]) for name in names]


def _revisions(requests: list[Any]) -> list[int]:
    return [r.json()["data"]["revision"] for r in requests]


class TestSignatures:
    def test_the_reference_library_verifies_every_delivery(
        self, central: CentralProc, receiver: Receiver
    ) -> None:
        """Each delivery of a real central verifies with ``standardwebhooks``."""
        client = _client(central)
        created = client.create_webhook(receiver.url(), ["model.create"])
        revisions = _models(client, "fraud", "churn")
        got = receiver.wait(2)
        bodies = [Webhook(created["secret"]).verify(r.body, r.headers) for r in got]
        assert revisions == [b["data"]["revision"] for b in bodies]

    def test_the_documented_receiver_verifies_a_real_central(
        self, central: CentralProc, tmp_path: Path
    ) -> None:
        """The receiver example of docs/API.md, run as its own process, accepts what central
        sends (it answers 401 to anything it cannot verify, and central would retry)."""
        found = re.search(
            r"<!-- receiver example -->\s*```python\n(.*?)```", API_DOCS.read_text(), re.DOTALL
        )
        assert found is not None
        script = tmp_path / "receiver.py"
        script.write_text(found.group(1))
        port = free_port()
        client = _client(central)
        created = client.create_webhook(f"http://127.0.0.1:{port}/", ["model.create"])
        proc = subprocess.Popen(
            [sys.executable, str(script), str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={"WEBHOOK_SECRET": created["secret"], "PATH": ""},
        )
        assert proc.stdout is not None
        try:
            revision = _models(client, "fraud")[0]
            line = proc.stdout.readline().decode().split()
        finally:
            stop_process(proc)
            proc.stdout.close()
        expected = [f"{created['id']}_{revision}", "model.create", "fraud"]
        assert expected == line


class TestRetries:
    def test_three_500s_then_200_gets_the_event_once_more_then_the_rest_in_order(
        self, central: CentralProc, receiver: Receiver
    ) -> None:
        """The first event is attempted four times (the fourth succeeds); every later event
        arrives exactly once, in revision order."""
        receiver.answer("/hook", Answer(500), Answer(500), Answer(500))
        client = _client(central)
        created = client.create_webhook(receiver.url(), ["model.*"])
        revisions = _models(client, "a", "b", "c")
        got = receiver.wait(6)
        final = wait_for(
            lambda: (
                (d := client.deliveries(created["id"])["items"])
                and all(x["state"] == "delivered" for x in d)
                and d
            ),
            what="every delivery done",
        )
        expected = ([revisions[0]] * 4 + revisions[1:], 6, [1, 1, 4])
        assert expected == (_revisions(got), len(receiver.at()), [d["attempts"] for d in final])


class TestKill9:
    def test_every_committed_event_is_delivered_after_a_kill(
        self, tmp_path: Path, receiver: Receiver
    ) -> None:
        """Deliveries pending (the receiver failing) when central is killed with SIGKILL:
        the restarted central delivers every committed event, in revision order."""
        data = tmp_path / "central"
        first = _central(data)
        try:
            client = _client(first)
            receiver.answer("/hook", *[Answer(503)] * 10_000)
            created = client.create_webhook(receiver.url(), ["model.*"])
            revisions = _models(client, *(f"m{i}" for i in range(10)))
            receiver.wait(2)  # the first event is being retried
        finally:
            first.kill()
        receiver.unscript()  # the receiver is fixed while central is down
        second = _central(data)
        try:
            client = _client(second)
            more = _models(client, "after-restart")
            ok = wait_for(
                lambda: (
                    len(receiver.acknowledged()) >= len(revisions + more)
                    and receiver.acknowledged()
                ),
                what="every event acknowledged",
            )
            status = client.get_webhook(created["id"])["delivery"]
        finally:
            second.stop()
        firsts = list(dict.fromkeys(_revisions(ok)))
        expected = (revisions + more, revisions[-1] + 1, "idle")
        assert expected == (firsts, status["cursor"], status["state"])


class TestStreams:
    def test_a_scoped_token_streams_only_its_models(self, central: CentralProc) -> None:
        """A reader scoped to ``fraud*`` streams its models' events and nothing else."""
        admin = _client(central)
        secret = admin.create_token("eu", "reader", ["fraud*"])["secret"]
        _models(admin, "churn", "fraud", "churn-2", "fraud-2", "fraud-end")
        seen = []
        for event in _client(central, secret).follow_events(after=0, reconnect=False):
            seen.append(event["subject"])
            if event["subject"] == "fraud-end":
                break
        assert ["fraud", "fraud-2", "fraud-end"] == seen

    def test_the_stream_resumes_across_a_restart_without_gaps_or_repeats(
        self, tmp_path: Path
    ) -> None:
        """``follow_events`` reconnects with ``Last-Event-ID`` after central restarts: every
        revision arrives exactly once."""
        data, port = tmp_path / "central", free_port()
        first = _central(data, port)
        seen: list[int] = []
        done = threading.Event()
        client = _client(first)

        def follow() -> None:
            for event in client.follow_events(after=0):
                seen.append(event["revision"])
                if event["subject"] == "last":
                    done.set()
                    return

        _models(client, "a", "b")
        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        try:
            wait_for(lambda: len(seen) >= 3, what="the first events")
            first.stop()
            second = _central(data, port)
            try:
                _models(_client(second), "c", "d", "last")
                assert done.wait(60)
                head = second.healthz()["revision"]
            finally:
                second.stop()
        finally:
            first.stop()
        assert list(range(1, head + 1)) == seen


class TestRefusedTargets:
    def test_a_private_range_url_is_refused_by_default(self, tmp_path: Path) -> None:
        """Without --webhook-allow-private, private and loopback URLs are ``target_refused``
        and nothing is created."""
        proc = _central(tmp_path / "c", allow=False)
        try:
            client = _client(proc)
            refused = []
            for url in ("http://10.1.2.3/hook", "http://192.168.1.10/", "http://127.0.0.1:9/"):
                with pytest.raises(TargetRefused) as caught:
                    client.create_webhook(url)
                refused.append(caught.value.details["field"])
            listed = client.list_webhooks()["items"]
        finally:
            proc.stop()
        expected = (["url"] * 3, [])
        assert expected == (refused, listed)
