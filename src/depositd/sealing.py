"""Sealing personal data at rest: AES-256-GCM with a key from the configuration.

Each sealed value is ``nonce (12 bytes) || ciphertext || tag`` and is bound to the row it
belongs to (``context``, authenticated but not encrypted), so a sealed value copied into
another row does not open. The key never enters the database.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from depositd.errors import ConfigError, DepositdError

_NONCE_BYTES = 12


def read_key_file(path: Path, source: str) -> str:
    """A key file's text; ``ConfigError`` naming the setting (``source``) if it cannot be read."""
    try:
        return path.read_text()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read {path} ({exc.strerror})") from None


class Unsealable(DepositdError):
    """A sealed value does not open with this key and context: a wrong key, or tampering."""


class Sealer:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the key must be 32 bytes (AES-256)")
        self._aead = AESGCM(key)

    @classmethod
    def from_text(cls, text: str, source: str) -> Sealer:
        """A key written as base64 (what ``Sealer.new_key_text`` makes)."""
        try:
            return cls(base64.b64decode(text.strip(), validate=True))
        except (binascii.Error, ValueError):
            raise ConfigError(f"{source}: not a base64 32-byte key") from None

    @classmethod
    def from_file(cls, path: Path, source: str) -> Sealer:
        return cls.from_text(read_key_file(path, source), source)

    @staticmethod
    def new_key_text() -> str:
        return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()

    def seal(self, plaintext: bytes, context: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def open(self, sealed: bytes, context: str) -> bytes:
        nonce, ciphertext = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, ciphertext, context.encode())
        except InvalidTag:
            raise Unsealable(f"the sealed data of {context} does not open") from None
