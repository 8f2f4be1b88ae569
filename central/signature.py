"""Standard Webhooks signatures (https://www.standardwebhooks.com, version 1.0.0, symmetric).

A delivery carries three headers: ``webhook-id`` (the message's id: the same for every attempt
and redelivery of one event), ``webhook-timestamp`` (integer Unix seconds of this attempt) and
``webhook-signature``: space-separated ``v1,<base64 of HMAC-SHA256(key, id.timestamp.body)>``,
one per secret in use (two while a rotated secret's predecessor still signs). The key is the
base64-decoded part of the subscription's secret after ``whsec_``. docs/API.md has a receiver
that verifies it with the standard library; tests check it against the ``standardwebhooks``
package.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable

__all__ = ["SECRET_BYTES", "SECRET_PREFIX", "headers", "new_secret", "secret_key", "sign"]

SECRET_PREFIX = "whsec_"
#: Random bytes of a secret (the specification asks for 24 to 64).
SECRET_BYTES = 32

_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` and the standard base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


@functools.lru_cache(maxsize=256)
def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret. Raises ``ValueError`` for anything else."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is whsec_ and base64") from None
    if not key:
        raise ValueError("empty webhook secret")
    return key


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``message_id.timestamp.body`` under ``secret``.

    Raises ``ValueError`` for a message id outside ``[A-Za-z0-9_-]`` (a ``.`` would make two
    messages sign alike) or a bad secret.
    """
    if not _ID_RE.fullmatch(message_id):
        raise ValueError(f"invalid message id {message_id!r}")
    content = f"{message_id}.{int(timestamp)}.".encode() + body
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(
    secrets_in_use: Iterable[str], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt, signed with every secret given."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": " ".join(
            sign(secret, message_id, timestamp, body) for secret in secrets_in_use
        ),
    }
