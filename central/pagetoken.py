"""Page tokens: the opaque positions central issues for every list, MAC'd so they cannot be made up.

A token is ``<payload>.<mac>``, both urlsafe base64 without padding: the payload is the JSON
``{"k": <list kind>, "p": <position of the last row>}``, the MAC the first 16 bytes of
HMAC-SHA256 over it. :meth:`PageTokens.decode` checks the MAC (in constant time) *before* it
parses anything, so a token central did not issue never reaches the JSON parser: no nesting
bomb, no position made up to probe names (a scoped token must learn nothing of other models,
docs/API.md "Pagination"), no token of one list replayed on another.

The key is 32 random bytes kept in ``secrets.db`` (``central/auth.py``), never in the
replicated ``registry.db``, so page tokens survive a restart and a failover but no node can
forge one. A :class:`PageTokens` made without a key makes up its own (tests, a registry used
without its secrets).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from typing import Any

from modelreg.errors import InvalidField

__all__ = ["KEY_BYTES", "MAX_TOKEN_LEN", "PageTokens"]

#: Bytes of a page-token key.
KEY_BYTES = 32
#: Longest token accepted, in characters.
MAX_TOKEN_LEN = 2048
_MAC_BYTES = 16


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    """Strict urlsafe base64 without padding: only the one canonical spelling decodes."""
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(raw) != text:
        raise ValueError("not canonical base64")
    return raw


class PageTokens:
    """Issues and checks page tokens with one key (``KEY_BYTES`` bytes; None: a random one)."""

    def __init__(self, key: bytes | None = None) -> None:
        if key is not None and len(key) < KEY_BYTES:
            raise ValueError(f"a page-token key has at least {KEY_BYTES} bytes")
        self.key = key if key is not None else secrets.token_bytes(KEY_BYTES)

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self.key, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, kind: str, position: Any) -> str:
        """The token of ``position`` in the list ``kind`` (a JSON value)."""
        payload = json.dumps({"k": kind, "p": position}, separators=(",", ":")).encode()
        return _b64(payload) + "." + _b64(self._mac(payload))

    def decode(self, kind: str, token: Any) -> Any:
        """The position in ``token``, which must be one this key issued for ``kind``.

        Raises :class:`InvalidField` (field ``page_token``) for anything else: malformed, made
        up or altered, issued with another key, or issued for another list.
        """
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LEN:
            raise InvalidField("invalid page_token", field="page_token")
        body, dot, mac = token.partition(".")
        try:
            if not dot or not token.isascii():
                raise ValueError("no MAC")
            payload, given = _unb64(body), _unb64(mac)
        except (binascii.Error, ValueError):
            raise InvalidField("invalid page_token", field="page_token") from None
        if not hmac.compare_digest(given, self._mac(payload)):
            raise InvalidField(
                "invalid page_token: not one central issued (start again without it)",
                field="page_token",
            )
        try:
            data = json.loads(payload)
        except (ValueError, RecursionError):  # only our own JSON gets here; defence in depth
            raise InvalidField("invalid page_token", field="page_token") from None
        if not isinstance(data, dict) or data.get("k") != kind or "p" not in data:
            raise InvalidField("page_token does not belong to this list", field="page_token")
        return data["p"]
