"""Standard Webhooks signatures, checked against an independent implementation (the
``standardwebhooks`` package) and against the receiver example of docs/API.md."""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from modelreg.central.signature import headers, new_secret, secret_key, sign

API_DOCS = Path(__file__).resolve().parents[2] / "docs" / "API.md"
BODY = b'{"type":"version.register","timestamp":"2026-11-27T09:34:47.123456Z","data":{}}'


def docs_receiver(monkeypatch: pytest.MonkeyPatch, secret: str) -> dict[str, Any]:
    """The Python block of docs/API.md marked ``<!-- receiver example -->``, executed as a
    module (not as ``__main__``, so it does not serve)."""
    text = API_DOCS.read_text()
    found = re.search(r"<!-- receiver example -->\s*```python\n(.*?)```", text, re.DOTALL)
    assert found is not None, "docs/API.md has no receiver example"
    monkeypatch.setenv("WEBHOOK_SECRET", secret)
    namespace: dict[str, Any] = {"__name__": "docs_receiver"}
    exec(compile(found.group(1), str(API_DOCS), "exec"), namespace)
    return namespace


class TestSecrets:
    def test_a_secret_is_whsec_and_32_random_bytes(self) -> None:
        """New secrets are ``whsec_`` + base64 of 32 bytes, each different."""
        first, second = new_secret(), new_secret()
        expected = (True, 32, True)
        assert expected == (
            first.startswith("whsec_"),
            len(base64.b64decode(first[6:])),
            first != second,
        )

    @pytest.mark.parametrize("bad", ["", "whsec_", "whsec_***", "mr_abc", "AAAA"])
    def test_a_malformed_secret_is_refused(self, bad: str) -> None:
        """Anything but ``whsec_`` and base64 raises ValueError."""
        with pytest.raises(ValueError):
            secret_key(bad)


class TestIndependentVerifier:
    def test_the_standardwebhooks_package_verifies_our_headers(self) -> None:
        """The reference library accepts a delivery we signed, and parses its body."""
        secret = new_secret()
        sent = headers([secret], "wh_0123456789abcdef_42", int(time.time()), BODY)
        expected = {"type": "version.register"}
        parsed = Webhook(secret).verify(BODY, sent)
        assert expected == {"type": parsed["type"]}

    def test_our_signature_equals_the_reference_signature(self) -> None:
        """Byte for byte: the reference ``sign`` gives the same header value."""
        from datetime import UTC, datetime

        secret, moment = new_secret(), 1_764_000_000
        reference = Webhook(secret).sign(
            "msg_1", datetime.fromtimestamp(moment, UTC), BODY.decode()
        )
        assert reference == sign(secret, "msg_1", moment, BODY)

    @pytest.mark.parametrize("change", ["body", "id", "timestamp", "secret"])
    def test_the_reference_refuses_a_changed_delivery(self, change: str) -> None:
        """Any changed byte (body, id, timestamp) or another secret fails verification."""
        secret = new_secret()
        moment = int(time.time())
        sent = headers([secret], "wh_0123456789abcdef_42", moment, BODY)
        body = BODY + b" " if change == "body" else BODY
        if change == "id":
            sent["webhook-id"] = "wh_0123456789abcdef_43"
        if change == "timestamp":
            sent["webhook-timestamp"] = str(moment - 1)
        verifier = Webhook(new_secret() if change == "secret" else secret)
        with pytest.raises(WebhookVerificationError):
            verifier.verify(body, sent)

    def test_both_secrets_sign_during_a_rotation(self) -> None:
        """Two secrets give two ``v1,`` signatures; a receiver with either one verifies."""
        old, new = new_secret(), new_secret()
        sent = headers([new, old], "wh_0123456789abcdef_7", int(time.time()), BODY)
        expected = (2, True, True)
        assert expected == (
            len(sent["webhook-signature"].split()),
            Webhook(old).verify(BODY, sent) is not None,
            Webhook(new).verify(BODY, sent) is not None,
        )

    @pytest.mark.parametrize("message_id", ["", "a.b", "x" * 129, "ümlaut"])
    def test_a_message_id_that_could_collide_is_refused(self, message_id: str) -> None:
        """Ids with a ``.`` (or outside ``[A-Za-z0-9_-]``) would let two messages sign alike."""
        with pytest.raises(ValueError):
            sign(new_secret(), message_id, 1, BODY)


class TestDocsReceiver:
    def test_the_documented_algorithm_verifies_our_signature(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The receiver example of docs/API.md accepts our headers and refuses a tampered
        body, a stale timestamp and another secret."""
        secret = new_secret()
        verify = docs_receiver(monkeypatch, secret)["verify"]
        now = int(time.time())
        good = headers([secret], "wh_0123456789abcdef_42", now, BODY)
        stale = headers([secret], "wh_0123456789abcdef_42", now - 600, BODY)
        expected = (True, False, False, False, False)
        assert expected == (
            verify(secret, good, BODY),
            verify(secret, good, BODY + b"x"),
            verify(secret, stale, BODY),
            verify(new_secret(), good, BODY),
            verify(secret, {}, BODY),
        )
