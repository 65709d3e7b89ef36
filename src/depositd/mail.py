"""Sending email to end users: an SMTP server in production, a directory of files in dev.

Both senders take a finished ``EmailMessage``. The outbox writes each message as one ``.eml``
file (written to a temporary name, then renamed, so a reader never sees half a message) —
what ``depositd dev`` and the tests use to read verification tokens. The SMTP sender speaks to
the configured server with the standard library's client in a worker thread, over implicit
TLS or STARTTLS unless told otherwise.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Literal, Protocol

from depositd.errors import UpstreamUnavailable
from depositd.ids import new_id


class EmailSender(Protocol):
    async def send(self, message: EmailMessage) -> None:
        """Hand the message on; ``UpstreamUnavailable`` when that failed."""


def compose(sender: str, to: str, subject: str, text: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content(text)
    return message


class OutboxSender:
    """Writes every message to ``directory`` as ``<time-ordered id>.eml``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(self, message: EmailMessage) -> None:
        await asyncio.to_thread(self._write, message.as_bytes())

    def _write(self, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = new_id("mail")
        partial = self.directory / f".{name}.tmp"
        partial.write_bytes(data)
        partial.rename(self.directory / f"{name}.eml")


class SmtpSender:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        security: Literal["starttls", "tls", "none"] = "starttls",
        username: str | None = None,
        password: str | None = None,
        timeout_seconds: float = 10.0,
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self.security = host, port, security
        self.username, self.password = username, password
        self.timeout = timeout_seconds
        self.context = context or ssl.create_default_context()

    async def send(self, message: EmailMessage) -> None:
        try:
            await asyncio.to_thread(self._send, message)
        except (OSError, smtplib.SMTPException) as exc:
            raise UpstreamUnavailable(
                f"the mail server {self.host}:{self.port} did not take the message"
                f" ({type(exc).__name__})"
            ) from exc

    def _send(self, message: EmailMessage) -> None:
        client: smtplib.SMTP
        if self.security == "tls":
            client = smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=self.context
            )
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with client:
            if self.security == "starttls":
                client.starttls(context=self.context)
            if self.username is not None:
                client.login(self.username, self.password or "")
            client.send_message(message)
