"""Where webhooks may send requests: link-local never, loopback and private ranges only when
allowed, on the addresses a name resolves to at delivery time too."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver

from modelreg.central.targets import GuardedResolver, check_target, check_url, origin, refusal
from modelreg.errors import InvalidField, TargetRefused

LINK_LOCAL = [
    "169.254.169.254",
    "169.254.0.1",
    "fe80::1",
    "fe80::1%lo",
    "::ffff:169.254.169.254",
    "64:ff9b::a9fe:a9fe",
    "2002:a9fe:a9fe::1",
]
PRIVATE = ["127.0.0.1", "127.1.2.3", "10.1.2.3", "172.16.0.9", "192.168.1.1", "100.64.0.1", "::1"]
PRIVATE += ["fc00::1", "fd12:3456::1", "::ffff:10.0.0.1", "192.0.2.10"]
NOT_UNICAST = ["0.0.0.0", "::", "224.0.0.1", "ff02::1", "240.0.0.1", "255.255.255.255"]
PUBLIC = ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"]


class TestAddressPolicy:
    @pytest.mark.parametrize("address", LINK_LOCAL)
    @pytest.mark.parametrize("allow_private", [False, True])
    def test_link_local_is_always_refused(self, address: str, allow_private: bool) -> None:
        """169.254/16 and fe80::/10 (and IPv6 forms embedding them) are refused even when
        private targets are allowed: cloud metadata lives there."""
        why = refusal(address, allow_private)
        assert why is not None and "link-local" in why

    @pytest.mark.parametrize("address", PRIVATE)
    def test_private_needs_the_setting(self, address: str) -> None:
        """Loopback and private addresses: refused by default, allowed with the setting."""
        expected = (True, None)
        assert expected == (refusal(address, False) is not None, refusal(address, True))

    @pytest.mark.parametrize("address", NOT_UNICAST)
    def test_not_unicast_is_always_refused(self, address: str) -> None:
        """Unspecified, multicast, reserved and broadcast addresses are never targets."""
        assert refusal(address, True) is not None

    @pytest.mark.parametrize("address", PUBLIC)
    def test_public_addresses_are_allowed(self, address: str) -> None:
        """Global unicast addresses pass (nothing is sent to them here)."""
        assert refusal(address, False) is None


class TestUrls:
    @pytest.mark.parametrize(
        "url",
        [
            "",
            "ftp://example.com/x",
            "file:///etc/passwd",
            "http:///nohost",
            "/relative",
            "http://example.com/a b",
            "http://example.com/\x00",
            "http://example.com:99999/",
            "http://example.com/#frag",
            "https://" + "a" * 2100 + ".com/",
            42,
        ],
    )
    def test_malformed_urls_are_invalid_fields(self, url: Any) -> None:
        """Only absolute http(s) URLs with a host, a valid port and no fragment."""
        with pytest.raises(InvalidField) as caught:
            check_url(url)
        assert "url" == caught.value.details["field"]

    def test_the_origin_leaves_out_the_path(self) -> None:
        """Events and logs name ``scheme://host:port`` only (a path may be a credential)."""
        expected = "https://hooks.example.com:8443"
        assert expected == origin("https://hooks.example.com:8443/services/T0/B1/SECRET?x=1")

    async def test_a_private_literal_is_refused_by_default(self) -> None:
        """``http://10.1.2.3/`` is refused unless private targets are allowed."""
        with pytest.raises(TargetRefused) as caught:
            await check_target("http://10.1.2.3/hook", allow_private=False)
        expected = ("target_refused", "url")
        assert expected == (caught.value.code, caught.value.details["field"])
        assert "http://10.1.2.3/hook" == await check_target("http://10.1.2.3/hook", True)

    async def test_a_name_is_checked_on_what_it_resolves_to(self) -> None:
        """``localhost`` resolves to loopback: refused by default, allowed with the setting."""
        with pytest.raises(TargetRefused):
            await check_target("http://localhost:9/hook", allow_private=False)
        assert "http://localhost:9/hook" == await check_target("http://localhost:9/hook", True)

    async def test_cloud_metadata_is_refused_even_when_private_is_allowed(self) -> None:
        """The metadata URL is refused whatever the setting."""
        with pytest.raises(TargetRefused):
            await check_target("http://169.254.169.254/latest/meta-data/", allow_private=True)


class _Answers(AbstractResolver):
    """A base resolver that answers fixed addresses (the one seam: no DNS server here)."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[Any]:
        return [
            {"hostname": host, "host": a, "port": port, "family": family, "proto": 0, "flags": 0}
            for a in self.addresses
        ]

    async def close(self) -> None:
        pass


class TestGuardedResolver:
    async def test_a_name_rebound_to_metadata_is_refused_at_connect_time(self) -> None:
        """A name that now resolves to 169.254.169.254 gets no address: OSError naming why."""
        resolver = GuardedResolver(True, _Answers("169.254.169.254"))
        with pytest.raises(OSError) as caught:
            await resolver.resolve("hooks.example.com", 443)
        assert "link-local" in str(caught.value)

    async def test_refused_addresses_are_dropped_and_the_rest_kept(self) -> None:
        """Of a public and a link-local answer only the public one is connected to."""
        resolver = GuardedResolver(False, _Answers("169.254.169.254", "93.184.216.34"))
        found = await resolver.resolve("hooks.example.com", 443)
        assert ["93.184.216.34"] == [r["host"] for r in found]

    async def test_the_real_resolver_refuses_loopback_by_default(self) -> None:
        """Through the system resolver: ``localhost`` has no allowed address by default."""
        with pytest.raises(OSError):
            await GuardedResolver(False).resolve("localhost", 80)
        found = await GuardedResolver(True).resolve("localhost", 80)
        assert found
