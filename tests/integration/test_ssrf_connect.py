"""The SSRF guard at connect time, against real receivers on 127.0.0.1 (no database)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from depositd.config import DeliveryConfig
from depositd.delivery.ssrf import USER_AGENT, UnsafeDestination, new_session, post
from tests.unit.test_ssrf import StaticResolver

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DEV = DeliveryConfig(allow_http=True)
LOOPBACK_ALLOWED = DeliveryConfig(allow_http=True, allow_networks=["127.0.0.1/32", "::1/128"])
BODY = b'{"type": "deposit.credited"}'
HEADERS = {"Content-Type": "application/json", "webhook-id": "evt_1"}


@dataclass
class Receiver:
    url: str
    port: int
    #: (path, headers, body) of every request that arrived
    seen: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)


async def answer_ok(request: web.Request) -> web.StreamResponse:
    return web.Response(text="thanks")


@asynccontextmanager
async def receiver(
    handler: Handler = answer_ok, tls: ssl.SSLContext | None = None
) -> AsyncIterator[Receiver]:
    """A real HTTP(S) server on 127.0.0.1, on a free port, recording what it receives."""

    async def record(request: web.Request) -> web.StreamResponse:
        found.seen.append((request.path, dict(request.headers), await request.read()))
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = runner.addresses[0][1]
    found = Receiver(f"{'https' if tls else 'http'}://127.0.0.1:{port}", port)
    try:
        yield found
    finally:
        await runner.cleanup()


def refusal(raised: pytest.ExceptionInfo[aiohttp.ClientConnectorError]) -> str:
    assert isinstance(raised.value.os_error, UnsafeDestination)
    return str(raised.value.os_error)


async def test_a_webhook_reaches_an_allow_listed_receiver() -> None:
    async with receiver() as hooks, new_session(LOOPBACK_ALLOWED) as session:
        reply = await post(session, f"{hooks.url}/hook", BODY, HEADERS)
    assert (reply.status, reply.excerpt) == (200, b"thanks")
    [(path, headers, body)] = hooks.seen
    assert (path, body) == ("/hook", BODY)
    assert headers["User-Agent"] == USER_AGENT
    assert headers["webhook-id"] == "evt_1"
    assert headers["Accept-Encoding"] == "identity"


async def test_no_cookies_are_kept_between_deliveries() -> None:
    async def set_cookie(request: web.Request) -> web.StreamResponse:
        response = web.Response(text="ok")
        response.set_cookie("session", "abc")
        return response

    async with receiver(set_cookie) as hooks, new_session(LOOPBACK_ALLOWED) as session:
        await post(session, hooks.url, BODY, HEADERS)
        await post(session, hooks.url, BODY, HEADERS)
    assert [("Cookie" in headers) for _, headers, _ in hooks.seen] == [False, False]


async def test_only_an_excerpt_of_the_answer_is_read() -> None:
    async def answer_a_lot(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"x" * 1_000_000)

    async with receiver(answer_a_lot) as hooks, new_session(LOOPBACK_ALLOWED) as session:
        reply = await post(session, hooks.url, BODY, HEADERS, excerpt_bytes=100)
    assert reply.excerpt == b"x" * 100


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1 is a loopback address"),
        ("[::ffff:127.0.0.1]", "::ffff:7f00:1 is the IPv4-mapped form of 127.0.0.1, a loopback"),
        ("[::1]", "::1 is a loopback address"),
        ("10.0.0.1", "10.0.0.1 is a private address"),
        ("169.254.169.254", "169.254.169.254 is the cloud metadata address"),
    ],
)
async def test_a_literal_address_is_refused_at_connect_time(host: str, address: str) -> None:
    # aiohttp never asks the resolver about a literal: the socket factory is what refuses it
    async with receiver() as hooks, new_session(DEV) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as raised:
            await post(session, f"http://{host}:{hooks.port}/hook", BODY, HEADERS)
    assert refusal(raised).startswith(address)
    assert hooks.seen == []


async def test_a_decimal_address_never_connects() -> None:
    async with receiver() as hooks, new_session(DEV) as session:
        with pytest.raises(aiohttp.ClientError):
            await post(session, f"http://2130706433:{hooks.port}/hook", BODY, HEADERS)
    assert hooks.seen == []


async def test_a_name_resolving_to_loopback_is_refused() -> None:
    async with receiver() as hooks, new_session(DEV) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as raised:
            await post(session, f"http://localhost:{hooks.port}/hook", BODY, HEADERS)
    assert refusal(raised).startswith("localhost resolves to 127.0.0.1, a loopback address;")
    assert hooks.seen == []


async def test_a_name_resolving_to_an_allow_listed_address_is_reached() -> None:
    async with receiver() as hooks, new_session(LOOPBACK_ALLOWED) as session:
        reply = await post(session, f"http://localhost:{hooks.port}/hook", BODY, HEADERS)
    assert reply.status == 200
    assert len(hooks.seen) == 1


async def test_a_name_resolving_to_a_private_address_is_refused() -> None:
    names = StaticResolver({"hooks.internal.test": ["10.0.0.9"]})
    async with new_session(DEV, resolver=names) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as raised:
            await post(session, "http://hooks.internal.test/hook", BODY, HEADERS)
    assert refusal(raised).startswith("hooks.internal.test resolves to 10.0.0.9, a private")


async def test_the_connection_goes_to_the_address_that_was_checked() -> None:
    # refused addresses are dropped, not tried: 10.0.0.9 would hang until the timeout
    policy = DeliveryConfig(
        allow_http=True, allow_networks=["127.0.0.1/32"], connect_timeout_seconds=2
    )
    names = StaticResolver({"hooks.example.test": ["10.0.0.9", "127.0.0.1"]})
    async with receiver() as hooks, new_session(policy, resolver=names) as session:
        url = f"http://hooks.example.test:{hooks.port}/hook"
        reply = await post(session, url, BODY, HEADERS)
    assert reply.status == 200
    [(_, headers, _)] = hooks.seen
    assert headers["Host"] == f"hooks.example.test:{hooks.port}"


@asynccontextmanager
async def redirecting_to_an_internal_target() -> AsyncIterator[tuple[Receiver, Receiver]]:
    async with receiver() as target:

        async def redirect(request: web.Request) -> web.StreamResponse:
            raise web.HTTPFound(f"{target.url}/internal")

        async with receiver(redirect) as hooks:
            yield hooks, target


async def test_a_redirect_is_the_answer_and_is_not_followed() -> None:
    async with (
        redirecting_to_an_internal_target() as (hooks, target),
        new_session(LOOPBACK_ALLOWED) as session,
    ):
        reply = await post(session, f"{hooks.url}/hook", BODY, HEADERS)
    assert reply.status == 302
    assert reply.headers["Location"] == f"{target.url}/internal"
    assert len(hooks.seen) == 1
    assert target.seen == []


async def test_the_session_refuses_to_follow_a_redirect_when_asked_to() -> None:
    async with (
        redirecting_to_an_internal_target() as (hooks, target),
        new_session(LOOPBACK_ALLOWED) as session,
    ):
        with pytest.raises(UnsafeDestination, match=r"answered 302 \(a redirect\)"):
            await session.post(f"{hooks.url}/hook", data=BODY)
    assert target.seen == []


async def test_a_slow_receiver_times_out() -> None:
    done = asyncio.Event()

    async def stall(request: web.Request) -> web.StreamResponse:
        await asyncio.wait_for(done.wait(), 5)
        return web.Response()

    policy = DeliveryConfig(
        allow_http=True, allow_networks=["127.0.0.1/32"], total_timeout_seconds=0.3
    )
    async with receiver(stall) as hooks, new_session(policy) as session:
        try:
            with pytest.raises(TimeoutError):
                await post(session, hooks.url, BODY, HEADERS)
        finally:
            done.set()


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no public authority signed, and its key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(  # noqa: S603 - fixed arguments
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_certificates_are_verified_against_the_configured_authorities(
    self_signed: tuple[Path, Path],
) -> None:
    cert, key = self_signed
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    trusting = DeliveryConfig(allow_networks=["127.0.0.1/32"], ca_bundle=cert)
    async with receiver(tls=tls) as hooks:
        async with new_session(DeliveryConfig(allow_networks=["127.0.0.1/32"])) as session:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await post(session, hooks.url, BODY, HEADERS)
        async with new_session(trusting) as session:
            reply = await post(session, hooks.url, BODY, HEADERS)
    assert reply.status == 200
    assert len(hooks.seen) == 1
