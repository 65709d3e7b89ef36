"""The SSRF guard's rules: which URLs and addresses webhooks may reach (no network)."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from pydantic import ValidationError

from depositd.config import DeliveryConfig
from depositd.delivery.ssrf import (
    AddressPolicy,
    GuardedResolver,
    UnsafeDestination,
    UnsafeUrl,
    check_url,
    is_allowed_address,
    new_session,
)
from depositd.errors import ConfigError, InputError

STRICT = DeliveryConfig()
DEV = DeliveryConfig(allow_http=True)


class StaticResolver(AbstractResolver):
    """Answers from a table, as a DNS server under test would."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=ip,
                port=port,
                family=socket.AF_INET6 if ":" in ip else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for ip in self.answers[host]
        ]

    async def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://127.0.0.1/hook", "127.0.0.1 is a loopback address"),
        ("https://10.0.0.1/", "10.0.0.1 is a private address"),
        ("https://169.254.169.254/latest/", "169.254.169.254 is the cloud metadata address"),
        ("https://[::1]/", "::1 is a loopback address"),
        ("https://[::ffff:127.0.0.1]/", "the IPv4-mapped form of 127.0.0.1, a loopback address"),
        ("https://2130706433/", "2130706433 (127.0.0.1) is a loopback address"),
        ("https://0x7f000001/", "0x7f000001 (127.0.0.1) is a loopback address"),
        ("https://0177.0.0.1/", "0177.0.0.1 (127.0.0.1) is a loopback address"),
        ("https://127.1/", "127.1 (127.0.0.1) is a loopback address"),
        ("https://127.0.0.1./", "127.0.0.1. (127.0.0.1) is a loopback address"),
        ("https://0/", "0 (0.0.0.0) is an unspecified address"),
        ("https://[fe80::1%25eth0]/", "fe80::1%eth0 is a link-local address"),
        ("https://100.64.0.1/", "100.64.0.1 is a shared (carrier-grade NAT) address"),
        ("https://[fd12::1]/", "fd12::1 is a private address"),
        ("https://[64:ff9b::a00:1]/", "the NAT64 form of 10.0.0.1, a private address"),
        ("https://[2002:a9fe:a9fe::]/", "the 6to4 form of 169.254.169.254, the cloud metadata"),
        ("https://[::127.0.0.1]/", "is a reserved address"),
        ("https://192.0.2.7/", "192.0.2.7 is a documentation address"),
        ("https://224.0.0.1/", "224.0.0.1 is a multicast address"),
        ("https://255.255.255.255/", "255.255.255.255 is a broadcast address"),
        ("https://198.18.0.1/", "198.18.0.1 is a non-public address"),
    ],
)
def test_a_non_public_ip_literal_is_refused_in_any_spelling(url: str, reason: str) -> None:
    with pytest.raises(UnsafeUrl) as refused:
        check_url(url, STRICT)
    assert reason in str(refused.value)
    assert "\n" not in str(refused.value)
    assert "delivery.allow_networks" in str(refused.value)


def test_the_refusal_says_what_is_wrong_and_what_to_do() -> None:
    with pytest.raises(UnsafeUrl) as refused:
        check_url("https://10.0.0.1/hook", STRICT)
    assert str(refused.value) == (
        "10.0.0.1 is a private address; webhooks go to public addresses only"
        " (allow it with delivery.allow_networks)"
    )
    assert isinstance(refused.value, InputError)
    assert refused.value.slug == "unsafe-url"


@pytest.mark.parametrize(
    ("url", "allow", "normalised"),
    [
        ("https://127.0.0.1:8443/hook", "127.0.0.1/32", "https://127.0.0.1:8443/hook"),
        ("https://10.0.0.1/", "10.0.0.0/8", "https://10.0.0.1/"),
        ("https://169.254.169.254/", "169.254.169.254", "https://169.254.169.254/"),
        ("https://[::1]/", "::1/128", "https://[::1]/"),
        ("https://[::ffff:127.0.0.1]/", "127.0.0.1/32", "https://[::ffff:7f00:1]/"),
        ("https://2130706433:8443/", "127.0.0.0/8", "https://127.0.0.1:8443/"),
        ("https://0x7f.1/", "127.0.0.1/32", "https://127.0.0.1/"),
    ],
)
def test_an_allow_listed_literal_is_accepted(url: str, allow: str, normalised: str) -> None:
    assert check_url(url, DeliveryConfig(allow_networks=[allow])) == normalised


@pytest.mark.parametrize(
    ("url", "normalised"),
    [
        ("https://8.8.8.8/hook", "https://8.8.8.8/hook"),
        ("https://134744072/", "https://8.8.8.8/"),
        ("https://[2606:4700::1111]:8443/a?b=c", "https://[2606:4700::1111]:8443/a?b=c"),
        ("HTTPS://Example.COM:443/Hook?x=1", "https://example.com/Hook?x=1"),
        ("https://bücher.example/hook", "https://xn--bcher-kva.example/hook"),
    ],
)
def test_public_urls_are_accepted_and_normalised(url: str, normalised: str) -> None:
    assert check_url(url, STRICT) == normalised


def test_a_host_name_is_left_for_connect_time() -> None:
    # names resolve differently over time; GuardedResolver judges them at each connection
    assert check_url("https://localhost/hook", STRICT) == "https://localhost/hook"


def test_plain_http_needs_allow_http() -> None:
    with pytest.raises(UnsafeUrl, match=r"plain http:// is refused; use https://"):
        check_url("http://example.com/hook", STRICT)
    assert check_url("http://example.com/hook", DEV) == "http://example.com/hook"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/hook", r"^ftp:// URLs are not supported; use https://$"),
        ("file:///etc/passwd", r"^file:// URLs are not supported"),
        ("gopher://example.com:70/_GET", r"^gopher:// URLs are not supported"),
        ("javascript:alert(1)", r"^javascript:// URLs are not supported"),
        ("//example.com/hook", r"^a URL without a scheme is not supported"),
        ("https://user:secret@example.com/", r"carries credentials \(user:password@\)"),
        ("https://user@example.com/", r"carries credentials"),
        ("https://example.com/hook#part", r"has a fragment"),
        ("https:///hook", r"^the URL has no host$"),
        ("https://exa mple.com/", r"spaces or control characters"),
        ("https://example.com/\x00", r"spaces or control characters"),
        ("https://example.com/" + "a" * 2048, r"characters long; the limit is 2048"),
        ("https://[::1/", r"^not a valid URL"),
        ("https://1.2.3.4.5/", r"not a valid IPv4 address"),
        ("https://256.0.0.1/", r"not a valid IPv4 address"),
        ("https://08.0.0.1/", r"not a valid IPv4 address"),
        ("https://1.16777216/", r"not a valid IPv4 address"),
    ],
)
def test_malformed_or_unsafe_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(UnsafeUrl, match=message):
        check_url(url, DEV)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104 - an address under test, nothing binds to it
        "255.255.255.255",
        "240.0.0.1",
        "239.1.1.1",
        "203.0.113.9",
        "::",
        "::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::127.0.0.1",
        "::ffff:0:7f00:1",
        "64:ff9b::7f00:1",
        "64:ff9b:1::8.8.8.8",
        "2002:7f00:1::1",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        "2001:db8::1",
        "fc00::1",
        "fe80::1",
        "fe80::1%eth0",
        "fec0::1",
        "ff02::1",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_allowed_address(ipaddress.ip_address(address), STRICT)


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_allowed_address(ipaddress.ip_address(address), STRICT)


def test_the_allow_list_opens_exactly_its_networks() -> None:
    policy = DeliveryConfig(allow_networks=["127.0.0.1/32", "10.1.0.0/16", "::1"])
    for allowed in ("127.0.0.1", "::ffff:127.0.0.1", "10.1.2.3", "::1", "64:ff9b::a01:203"):
        assert is_allowed_address(ipaddress.ip_address(allowed), policy), allowed
    for refused in ("127.0.0.2", "10.2.0.1", "169.254.169.254"):
        assert not is_allowed_address(ipaddress.ip_address(refused), policy), refused


def test_a_bad_allow_list_entry_is_a_config_error() -> None:
    # refused when the configuration is read ...
    with pytest.raises(ValidationError, match=r"'10\.0\.0\.0/33' is not an IP address or network"):
        DeliveryConfig(allow_networks=["10.0.0.0/33"])
    # ... and by the policy itself, for a config made without validation
    unchecked = DeliveryConfig.model_construct(allow_networks=["10.0.0.0/33"])
    with pytest.raises(ConfigError, match=r"^delivery\.allow_networks: .*'10\.0\.0\.0/33'"):
        AddressPolicy.from_config(unchecked)


async def test_the_resolver_refuses_a_name_with_only_refused_addresses() -> None:
    inner = StaticResolver({"internal.example": ["10.0.0.7", "fd00::7"]})
    resolver = GuardedResolver(AddressPolicy(), inner)
    with pytest.raises(UnsafeDestination) as refused:
        await resolver.resolve("internal.example", 443)
    assert str(refused.value) == (
        "internal.example resolves to 10.0.0.7, a private address (and 1 more refused);"
        " webhooks go to public addresses only (allow it with delivery.allow_networks)"
    )
    assert isinstance(refused.value, OSError)


async def test_the_resolver_keeps_only_allowed_addresses() -> None:
    inner = StaticResolver({"mixed.example": ["10.0.0.7", "93.184.216.34", "127.0.0.1"]})
    resolver = GuardedResolver(AddressPolicy(), inner)
    found = await resolver.resolve("mixed.example", 443)
    assert [result["host"] for result in found] == ["93.184.216.34"]


async def test_the_resolver_lets_allow_listed_addresses_through() -> None:
    inner = StaticResolver({"internal.example": ["10.0.0.7"]})
    resolver = GuardedResolver(
        AddressPolicy.from_config(DeliveryConfig(allow_networks=["10.0.0.0/8"])), inner
    )
    found = await resolver.resolve("internal.example", 443)
    assert [result["host"] for result in found] == ["10.0.0.7"]


async def test_an_unreadable_ca_bundle_is_a_config_error(tmp_path: Path) -> None:
    policy = DeliveryConfig(ca_bundle=tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match=r"^delivery\.ca_bundle: cannot load"):
        new_session(policy)
