"""Public identifiers: a type prefix and a time-ordered random part (sortable, unguessable)."""

from __future__ import annotations

import base64
import os
import time

# RFC 4648 base32 re-lettered into Crockford's alphabet (lower case), whose letters sort in
# the same order as the values they stand for: ids sort by creation time.
_TO_CROCKFORD = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789abcdefghjkmnpqrstvwxyz"
)


def new_id(prefix: str) -> str:
    """``prefix_`` + 26 base32 characters: 48 bits of milliseconds, then 80 random bits."""
    raw = (time.time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(10)
    return f"{prefix}_{base64.b32encode(raw)[:26].translate(_TO_CROCKFORD).decode()}"
