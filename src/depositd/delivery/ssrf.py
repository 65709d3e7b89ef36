"""The SSRF guard: webhooks reach public addresses only, checked on the address connected to.

Three gates, each enough on its own for the case it covers:

* ``check_url`` refuses, when an endpoint is created, URLs that are unsafe whatever DNS
  says: other schemes, credentials, fragments, and IP literals in any spelling that point
  somewhere non-public.
* ``GuardedResolver`` drops every refused address a host name resolves to. aiohttp connects
  to exactly the addresses the resolver returns, so the address checked is the address
  used (pinned: no second lookup a rebinding DNS server could answer differently).
* The connector's socket factory checks each address again just before connecting. aiohttp
  never asks the resolver about IP literals, so this is what stops ``http://10.0.0.1/``
  (and a redirect to it) at connect time.

``new_session`` puts the last two together; ``post`` is the one way to send, and it never
follows a redirect.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from types import SimpleNamespace

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from depositd import __version__
from depositd.config import DeliveryConfig
from depositd.errors import ConfigError, InputError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

USER_AGENT = f"depositd-webhooks/{__version__}"
MAX_URL_LENGTH = 2048

_ADVICE = "webhooks go to public addresses only (allow it with delivery.allow_networks)"


class UnsafeUrl(InputError):
    """An endpoint URL webhooks must not be sent to; the message says what to change."""

    slug = "unsafe-url"


class UnsafeDestination(OSError):
    """A connection to a refused address was about to be made; nothing was sent."""

    def __init__(self, message: str) -> None:
        # with an errno and strerror, aiohttp's ClientConnectorError shows the message
        super().__init__(errno.EACCES, message)

    def __str__(self) -> str:
        return str(self.strerror)


def _networks(*cidrs: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


#: what a non-public address is, first match wins; anything else not globally routable is
#: "a non-public address" (benchmarking, IETF protocol assignments, Teredo, ...)
_NON_PUBLIC: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = (
    ("an unspecified address", _networks("0.0.0.0/8", "::/128")),
    ("a loopback address", _networks("127.0.0.0/8", "::1/128")),
    ("the cloud metadata address", _networks("169.254.169.254/32", "fd00:ec2::254/128")),
    ("a link-local address", _networks("169.254.0.0/16", "fe80::/10")),
    ("a private address", _networks("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")),
    ("a shared (carrier-grade NAT) address", _networks("100.64.0.0/10")),
    (
        "a documentation address",
        _networks("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"),
    ),
    ("a multicast address", _networks("224.0.0.0/4", "ff00::/8")),
    ("a broadcast address", _networks("255.255.255.255/32")),
    # ::/8 holds the IPv4-compatible and IPv4-translated forms, and local-use NAT64
    ("a reserved address", _networks("240.0.0.0/4", "::/8", "fec0::/10")),
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses webhooks may reach: public ones, and any inside ``allowed``."""

    allowed: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_config(cls, config: DeliveryConfig) -> AddressPolicy:
        try:
            return cls(tuple(ipaddress.ip_network(n, strict=False) for n in config.allow_networks))
        except ValueError as exc:
            raise ConfigError(f"delivery.allow_networks: {exc}") from None

    def allows(self, ip: IPAddress) -> bool:
        return self.refusal(ip) is None

    def refusal(self, ip: IPAddress) -> str | None:
        """What makes ``ip`` unreachable ("a private address"), or None when it may be reached.

        An IPv6 form carrying an IPv4 address (mapped, 6to4, NAT64) is judged by that address.
        """
        if any(ip in network for network in self.allowed):
            return None
        carried = _carried_ipv4(ip)
        if carried is not None:
            form, inner = carried
            why = self.refusal(inner)
            return None if why is None else f"{form} of {inner}, {why}"
        for kind, networks in _NON_PUBLIC:
            if any(ip in network for network in networks):
                return kind
        return None if ip.is_global else "a non-public address"


def _carried_ipv4(ip: IPAddress) -> tuple[str, ipaddress.IPv4Address] | None:
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return "the IPv4-mapped form", ip.ipv4_mapped
    if ip.sixtofour is not None:
        return "the 6to4 form", ip.sixtofour
    if ip in _NAT64:
        return "the NAT64 form", ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return None


def is_allowed_address(ip: IPAddress, policy: DeliveryConfig) -> bool:
    """Whether webhooks may connect to ``ip``: allow-listed, or globally routable."""
    return AddressPolicy.from_config(policy).allows(ip)


def check_url(url: str, policy: DeliveryConfig) -> str:
    """``url`` normalised, if webhooks may be sent to it; else ``UnsafeUrl`` saying why.

    Host names are not resolved here (their addresses may change): they are checked at
    every connection. An IP literal is checked at once, in whatever spelling it comes.
    """
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"the URL is {len(url)} characters long; the limit is {MAX_URL_LENGTH}")
    if any(char.isspace() or not char.isprintable() for char in url):
        raise UnsafeUrl("the URL contains spaces or control characters; percent-encode them")
    try:
        parsed = URL(url)
    except ValueError as exc:
        raise UnsafeUrl(f"not a valid URL ({exc})") from None
    if parsed.scheme not in ("http", "https"):
        given = f"{parsed.scheme}:// URLs are" if parsed.scheme else "a URL without a scheme is"
        raise UnsafeUrl(f"{given} not supported; use https://")
    if parsed.scheme == "http" and not policy.allow_http:
        raise UnsafeUrl(
            "plain http:// is refused; use https:// (delivery.allow_http permits it in development)"
        )
    if parsed.raw_user is not None or parsed.raw_password is not None:
        raise UnsafeUrl(
            "the URL carries credentials (user:password@); remove them, receivers check the"
            " webhook signature instead"
        )
    if "#" in url:
        raise UnsafeUrl("the URL has a fragment (#...), which is never sent; remove it")
    if not parsed.host:
        raise UnsafeUrl("the URL has no host")
    ip = _ip_literal(parsed.host)
    if ip is None:
        return str(parsed)
    why = AddressPolicy.from_config(policy).refusal(ip)
    if why is not None:
        named = parsed.host if parsed.host == str(ip) else f"{parsed.host} ({ip})"
        raise UnsafeUrl(f"{named} is {why}; {_ADVICE}")
    if isinstance(ip, ipaddress.IPv4Address):
        parsed = parsed.with_host(str(ip))  # aiohttp refuses 127.1, 2130706433 and the like
    return str(parsed)


_IPV4_PART = re.compile(r"0[xX][0-9a-fA-F]*|[0-9]+")


def _ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` spells, or None for a name.

    IPv4 follows the rules of ``inet_aton`` (and of browsers): up to four parts, each
    decimal, octal (``0177``) or hex (``0x7f``), the last filling the remaining bytes, so
    ``2130706433``, ``0x7f000001``, ``0177.0.0.1`` and ``127.1`` all spell 127.0.0.1.
    """
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise UnsafeUrl(f"{host} is not a valid IPv6 address") from None
    parts = host.removesuffix(".").split(".")
    if not _IPV4_PART.fullmatch(parts[-1]):
        return None  # a name: no top-level domain is numeric
    ip = _legacy_ipv4(parts)
    if ip is None:
        raise UnsafeUrl(f"{host} is not a valid IPv4 address or host name")
    return ip


def _legacy_ipv4(parts: list[str]) -> ipaddress.IPv4Address | None:
    if len(parts) > 4 or not all(_IPV4_PART.fullmatch(part) for part in parts):
        return None
    try:
        *head, last = [_ipv4_number(part) for part in parts]
    except ValueError:  # 08: not octal
        return None
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    return ipaddress.IPv4Address(sum(n << 8 * (3 - i) for i, n in enumerate(head)) + last)


def _ipv4_number(part: str) -> int:
    if part[:2] in ("0x", "0X"):
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8)
    return int(part)


class GuardedResolver(AbstractResolver):
    """Resolves with ``inner`` and returns only the addresses the policy allows.

    Raises ``UnsafeDestination`` when nothing allowed remains. aiohttp connects to exactly
    the addresses returned, so the address checked is the address used.
    """

    def __init__(self, addresses: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self._addresses = addresses
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        refused: list[str] = []
        for result in found:
            why = self._addresses.refusal(ipaddress.ip_address(result["host"]))
            if why is None:
                allowed.append(result)
            else:
                refused.append(f"{result['host']}, {why}")
        if refused and not allowed:
            more = f" (and {len(refused) - 1} more refused)" if len(refused) > 1 else ""
            raise UnsafeDestination(f"{host} resolves to {refused[0]}{more}; {_ADVICE}")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def _guarded_socket_factory(addresses: AddressPolicy) -> aiohttp.SocketFactoryType:
    def open_socket(addr_info: aiohttp.AddrInfoType) -> socket.socket:
        family, kind, proto, _, sockaddr = addr_info
        try:
            ip = ipaddress.ip_address(sockaddr[0])
        except ValueError:
            raise UnsafeDestination(f"{sockaddr[0]} is not an IP address") from None
        why = addresses.refusal(ip)
        if why is not None:
            raise UnsafeDestination(f"{ip} is {why}; {_ADVICE}")
        return socket.socket(family, kind, proto)

    return open_socket


async def _refuse_redirect(
    session: aiohttp.ClientSession,
    context: SimpleNamespace,
    params: aiohttp.TraceRequestRedirectParams,
) -> None:
    params.response.close()
    raise UnsafeDestination(
        f"{params.url} answered {params.response.status} (a redirect); webhooks never follow"
        " redirects: send with depositd.delivery.ssrf.post"
    )


def new_session(
    policy: DeliveryConfig, *, resolver: AbstractResolver | None = None
) -> aiohttp.ClientSession:
    """A pooled HTTP client that connects only where the policy allows.

    Send with ``post``: ``session.post`` would follow redirects by default, so the session
    refuses any redirect it is asked to follow. Certificates are always verified.
    ``resolver`` is the name lookup to guard (aiohttp's default; tests pass a fake).
    Call it inside the event loop that will use it.
    """
    addresses = AddressPolicy.from_config(policy)
    tls = _tls_context(policy)
    connector = aiohttp.TCPConnector(
        limit=policy.concurrency,
        resolver=GuardedResolver(addresses, resolver),
        socket_factory=_guarded_socket_factory(addresses),
        ssl=tls,
    )
    redirects = aiohttp.TraceConfig()
    redirects.on_request_redirect.append(_refuse_redirect)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(
            total=policy.total_timeout_seconds, connect=policy.connect_timeout_seconds
        ),
        cookie_jar=aiohttp.DummyCookieJar(),
        # bodies are kept as raw excerpts: nothing to gain from decompressing them
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        auto_decompress=False,
        trust_env=False,  # a proxy from the environment would connect for us, unchecked
        trace_configs=[redirects],
    )


def _tls_context(policy: DeliveryConfig) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if policy.ca_bundle is not None:
        try:
            context.load_verify_locations(cafile=policy.ca_bundle)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"delivery.ca_bundle: cannot load {policy.ca_bundle} ({exc})"
            ) from exc
    return context


@dataclass(frozen=True)
class Reply:
    """What a receiver answered: its status, headers and the first bytes of its body."""

    status: int
    headers: Mapping[str, str]
    excerpt: bytes


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    excerpt_bytes: int = 512,
) -> Reply:
    """POST ``body`` to ``url`` once, without following redirects: a 3xx is the answer.

    Reads at most ``excerpt_bytes`` of the answer. A refused address raises
    ``aiohttp.ClientConnectorError`` whose ``os_error`` is an ``UnsafeDestination`` (as any
    request on the session would); other failures raise ``aiohttp.ClientError`` or
    ``TimeoutError``.
    """
    async with session.post(url, data=body, headers=headers, allow_redirects=False) as answer:
        excerpt = bytearray()
        while len(excerpt) < excerpt_bytes:
            chunk = await answer.content.read(excerpt_bytes - len(excerpt))
            if not chunk:
                break
            excerpt += chunk
        # leaving unread bytes behind closes the connection instead of pooling it
        return Reply(answer.status, answer.headers, bytes(excerpt))
