"""Password hashing (argon2id) for end users' and operators' logins, and token digests.

Passwords are hashed with RFC 9106's second recommended parameters (64 MiB, 3 passes,
4 lanes), which take a while: callers run ``hash_password`` and ``verify_password`` in a
worker thread. Random tokens (sessions, verification) carry 256 bits, so a plain SHA-256 is
enough to store them.
"""

from __future__ import annotations

import functools
import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()  # argon2id, t=3, m=64 MiB, p=4


@functools.cache
def _absent_hash() -> str:
    """Made on first use, in the caller's worker thread (a hash takes ~0.1 s: not at every
    start of the CLI, not on the event loop)."""
    return _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches; with no hash (no such account) it is checked against a
    throwaway one all the same, so both take as long."""
    try:
        return _hasher.verify(password_hash or _absent_hash(), password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with other parameters than today's."""
    return _hasher.check_needs_rehash(password_hash)


def digest(token: str) -> str:
    """How a random token is stored (API keys, sessions, email tokens): 256 random bits leave
    nothing to brute-force, so a fast hash lets every request be checked cheaply."""
    return hashlib.sha256(token.encode()).hexdigest()
