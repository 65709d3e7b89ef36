"""The pieces of end-user accounts that need no database: the password policy, email
addresses, sealing at rest, the auth rate limit, and the email senders."""

from __future__ import annotations

import asyncio
import email
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Message as MessageHandler

from depositd.api.throttle import Throttle
from depositd.config import load_config
from depositd.domain.credentials import (
    InvalidEmail,
    WeakPassword,
    check_password,
    normalize_email,
)
from depositd.errors import ConfigError, UpstreamUnavailable
from depositd.mail import OutboxSender, SmtpSender, compose
from depositd.sealing import Sealer, Unsealable

from ..conftest import free_port


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("nine char", "at least 10"),
        ("x" * 129, "at most 128"),
        ("Password123", "leaked"),
        ("QWERTYUIOP", "leaked"),
        ("zzzzzzzzzzzz", "repeated"),
        ("abcdefghijk", "run"),
        ("9876543210", "run"),
        ("sophia-likes-cats", "email address"),
    ],
)
def test_weak_passwords_are_refused_with_the_reason(password: str, why: str) -> None:
    with pytest.raises(WeakPassword, match=why):
        check_password(password, "Sophia@example.com")


@pytest.mark.parametrize(
    "password",
    [
        "correct horse battery staple",  # lower-case words are fine: length is what counts
        "Tr0ub4dor&3xyz",
        "密码很长也很安全的一句话",  # any script
        "Ab3$" * 32,  # the longest allowed
    ],
)
def test_long_enough_uncommon_passwords_pass(password: str) -> None:
    check_password(password, "sophia@example.com")


def test_email_addresses_are_trimmed_and_lower_cased() -> None:
    assert normalize_email("  Li.Wei+deposits@Example.COM ") == "li.wei+deposits@example.com"
    for bad in ("li.wei", "li@wei", "@example.com", "li wei@example.com", "a@b.c"):
        with pytest.raises(InvalidEmail):
            normalize_email(bad)


def test_sealed_data_opens_only_with_its_key_and_row() -> None:
    sealer = Sealer.from_text(Sealer.new_key_text(), "test")
    sealed = sealer.seal(b'{"name": "Li Wei"}', "kyc_1")
    assert b"Li Wei" not in sealed
    assert sealer.open(sealed, "kyc_1") == b'{"name": "Li Wei"}'
    with pytest.raises(Unsealable):
        sealer.open(sealed, "kyc_2")  # copied into another row
    with pytest.raises(Unsealable):
        Sealer.from_text(Sealer.new_key_text(), "test").open(sealed, "kyc_1")
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(Unsealable):
        sealer.open(tampered, "kyc_1")
    with pytest.raises(ConfigError, match="not a base64 32-byte key"):
        Sealer.from_text("c2hvcnQ=", "end_users.kyc_key")


def test_the_throttle_counts_per_address_per_window() -> None:
    now = [0.0]
    throttle = Throttle(2, clock=lambda: now[0])
    assert throttle.allow("10.0.0.1") is None
    assert throttle.allow("10.0.0.1") is None
    assert throttle.allow("10.0.0.1") == 60.0
    assert throttle.allow("10.0.0.2") is None  # another address has its own count
    now[0] = 45.0
    assert throttle.allow("10.0.0.1") == 15.0
    now[0] = 60.0
    assert throttle.allow("10.0.0.1") is None  # a new window


def test_kyc_key_and_smtp_password_stay_out_of_the_config_file(tmp_path: Path) -> None:
    for section, key in (("end_users", "kyc_key"), ("email", "smtp_password")):
        path = tmp_path / "depositd.toml"
        path.write_text(f'[{section}]\n{key} = "s3cret-value"\n')
        with pytest.raises(ConfigError, match="secrets do not belong") as raised:
            load_config(path, environ={})
        assert "s3cret-value" not in str(raised.value)
    with pytest.raises(ConfigError, match=r"end_users\.kyc_key: not a base64 32-byte key"):
        load_config(environ={"DEPOSITD_END_USERS__KYC_KEY": "nope"})
    with pytest.raises(ConfigError, match=r"email\.smtp_host: required"):
        load_config(environ={"DEPOSITD_EMAIL__SENDER": "smtp"})


async def test_the_outbox_writes_whole_eml_files(tmp_path: Path) -> None:
    sender = OutboxSender(tmp_path / "outbox")
    await sender.send(compose("depositd@example.com", "li@example.com", "Hello", "Body text"))
    [path] = list((tmp_path / "outbox").iterdir())
    assert path.suffix == ".eml"
    message = email.message_from_bytes(path.read_bytes())
    assert (message["To"], message["Subject"]) == ("li@example.com", "Hello")


async def test_the_smtp_sender_delivers_to_a_real_smtp_server() -> None:
    received: list[email.message.Message] = []

    class Keep(MessageHandler):
        def handle_message(self, message: email.message.Message) -> None:
            received.append(message)

    port = free_port()
    server = Controller(Keep(), hostname="127.0.0.1", port=port)
    server.start()
    try:
        sender = SmtpSender("127.0.0.1", port, security="none", timeout_seconds=5)
        await sender.send(compose("depositd@example.com", "li@example.com", "Verify", "token"))
    finally:
        server.stop()
    assert [(m["To"], m["Subject"]) for m in received] == [("li@example.com", "Verify")]
    # nobody listening: an upstream failure the caller can report, not a crash
    with pytest.raises(UpstreamUnavailable, match=f"127.0.0.1:{port}"):
        await asyncio.wait_for(
            sender.send(compose("depositd@example.com", "li@example.com", "Verify", "token")), 10
        )
