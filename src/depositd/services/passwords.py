"""Password hashing (argon2id) and token digests shared by end users' and operators' logins.

Passwords are hashed with RFC 9106's second recommended parameters (64 MiB, 3 passes,
4 lanes), which take a while: callers run ``hash_password`` and ``verify_password`` in a
worker thread. Random tokens (sessions, verification) carry 256 bits, so a plain SHA-256 is
enough to store them.
"""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()  # argon2id, t=3, m=64 MiB, p=4
#: compared against when an account does not exist, so that takes as long as a wrong password
ABSENT_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with other parameters than today's."""
    return _hasher.check_needs_rehash(password_hash)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
