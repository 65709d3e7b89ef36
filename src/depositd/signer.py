"""Signed values: HMAC-SHA256 with a key from the configuration, separated by purpose.

The dashboard signs its session cookies with it, and end users' status page links are the
order id signed: nobody without the key can make a link to an order they were not given.
A purpose (``"session"``, ``"order-status"``) goes into every MAC, so a value signed for one
use is never accepted for another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from pathlib import Path

from depositd.errors import ConfigError
from depositd.sealing import read_key_file

#: shortest key accepted, in characters
MIN_KEY_CHARS = 32


class Signer:
    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_CHARS:
            raise ValueError(f"the key must be at least {MIN_KEY_CHARS} bytes")
        self._key = key

    @classmethod
    def from_text(cls, text: str, source: str) -> Signer:
        key = text.strip()
        if len(key) < MIN_KEY_CHARS:
            raise ConfigError(f"{source}: use a random key of at least {MIN_KEY_CHARS} characters")
        return cls(key.encode())

    @classmethod
    def from_file(cls, path: Path, source: str) -> Signer:
        return cls.from_text(read_key_file(path, source), source)

    @staticmethod
    def new_key_text() -> str:
        return secrets.token_urlsafe(32)

    def sign(self, purpose: str, value: str) -> str:
        """The MAC of ``value`` for ``purpose``, as 43 URL-safe characters."""
        mac = hmac.new(self._key, f"{purpose}\0{value}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def verify(self, purpose: str, value: str, signature: str) -> bool:
        return hmac.compare_digest(self.sign(purpose, value), signature)

    @staticmethod
    def same(given: str, expected: str) -> bool:
        """Compare a value someone sent with the one expected, in constant time."""
        return hmac.compare_digest(given.encode(), expected.encode())
