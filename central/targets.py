"""Which addresses a webhook may reach: central must not become a way into its own network.

A webhook URL is chosen by whoever holds an admin token, but the request is made from central's
host, inside its network. So (docs/API.md, "Webhook safety"):

* only ``http`` and ``https`` URLs, without a fragment;
* **link-local addresses are always refused** (169.254.0.0/16, fe80::/10, and IPv6 forms that
  embed them): the cloud metadata service lives there, and it hands out credentials;
* loopback, private and other non-global addresses (127/8, 10/8, 172.16/12, 192.168/16,
  100.64/10, fc00::/7, ::1…) are refused unless central runs with ``--webhook-allow-private``
  (tests, receivers inside the company network);
* not only when a subscription is created: every connection resolves the name again and checks
  each address it got (:class:`GuardedResolver`, the resolver of the delivery client), so a name
  that later resolves elsewhere (DNS rebinding) is refused too, as is a subscription created
  while private targets were allowed once central no longer allows them.

Redirects are never followed and answers are read only up to a cap (``central/delivery.py``).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from typing import Any

from aiohttp.abc import AbstractResolver
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from modelreg.errors import InvalidField, TargetRefused

__all__ = [
    "MAX_URL_LEN",
    "GuardedResolver",
    "check_target",
    "check_url",
    "origin",
    "refusal",
]

#: Longest webhook URL accepted.
MAX_URL_LEN = 2048
#: Seconds a name may take to resolve when a subscription is created or changed.
RESOLVE_TIMEOUT_S = 5.0

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _embedded(ip: _Address) -> _Address:
    """The IPv4 address an IPv6 address stands for (mapped, 6to4, NAT64), else ``ip``."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def refusal(address: str, allow_private: bool) -> str | None:
    """Why a webhook may not connect to ``address`` (an IP, possibly with an IPv6 zone), or
    None when it may."""
    try:
        ip = _embedded(ipaddress.ip_address(address))
    except ValueError:
        return f"{address} is not an IP address"
    if ip.is_link_local:
        return f"{address} is a link-local address (never allowed: cloud metadata lives there)"
    if ip.is_unspecified or ip.is_multicast or (ip.is_reserved and not ip.is_loopback):
        return f"{address} is not a unicast address"
    if not ip.is_global and not allow_private:
        return (
            f"{address} is a loopback or private address "
            "(allowed only when central runs with --webhook-allow-private)"
        )
    return None


def check_url(url: Any) -> URL:
    """The parsed webhook URL. Raises :class:`InvalidField` (field ``url``) unless it is an
    absolute ``http``/``https`` URL with a host and without a fragment."""
    if not isinstance(url, str) or not 0 < len(url) <= MAX_URL_LEN:
        raise InvalidField(f"url must be a string of 1-{MAX_URL_LEN} characters", field="url")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise InvalidField("url must not hold spaces or control characters", field="url")
    try:
        parsed = URL(url)
        port = parsed.port
    except ValueError as exc:
        raise InvalidField(f"url is not a valid URL: {exc}", field="url") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise InvalidField("url must be an absolute http:// or https:// URL", field="url")
    if parsed.fragment or url.endswith("#"):
        raise InvalidField("url must not have a #fragment", field="url")
    if port is None or not 0 < port < 65536:
        raise InvalidField("url has an invalid port", field="url")
    return parsed


def origin(url: URL | str) -> str:
    """``scheme://host[:port]`` of ``url``: what events and logs name (the path of many
    receivers, chat webhooks for one, is a credential)."""
    parsed = URL(url) if isinstance(url, str) else url
    return str(parsed.origin())


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def check_target(url: Any, allow_private: bool) -> str:
    """The URL as stored, after checking where it points: an IP host against :func:`refusal`,
    a name by resolving it now and checking every address.

    Raises :class:`InvalidField` for a malformed URL or a name that does not resolve, and
    :class:`TargetRefused` (field ``url``) for a refused address.
    """
    parsed = check_url(url)
    host = parsed.host
    assert host is not None and parsed.port is not None
    if _is_ip(host):
        addresses = [host]
    else:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, parsed.port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S
            )
        except (OSError, TimeoutError) as exc:
            reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            raise InvalidField(f"url: cannot resolve {host}: {reason}", field="url") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        why = refusal(address, allow_private)
        if why is not None:
            raise TargetRefused(f"url {origin(parsed)} refused: {why}", field="url")
    return str(url)


class GuardedResolver(AbstractResolver):
    """The delivery client's resolver (``central/webhook_http.py``): resolves like aiohttp's
    threaded resolver, then drops every address :func:`refusal` refuses; raises ``OSError``
    (``EACCES``, naming the reason) when none is left. IP hosts are not resolved: the delivery
    code checks those itself (``central/delivery.py``)."""

    def __init__(self, allow_private: bool, base: AbstractResolver | None = None) -> None:
        self._allow_private = allow_private
        self._base = base

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[Any]:
        if self._base is None:
            self._base = ThreadedResolver()
        found = await self._base.resolve(host, port, family)
        allowed = [r for r in found if refusal(str(r["host"]), self._allow_private) is None]
        if not allowed:
            reasons = "; ".join(
                dict.fromkeys(str(refusal(str(r["host"]), self._allow_private)) for r in found)
            )
            raise OSError(errno.EACCES, f"{host} refused: {reasons or 'no address'}")
        return allowed

    async def close(self) -> None:
        if self._base is not None:
            await self._base.close()
