"""Public identifiers: a type prefix and a time-ordered random part (sortable, unguessable)."""

from __future__ import annotations

import os
import time

#: Crockford's base32 alphabet (lower case), whose letters sort in the same order as the
#: values they stand for: ids sort by creation time
ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
#: every 10-bit value as its two letters: an id is 13 look-ups (base64.b32encode is pure
#: Python and took a third of the recording of a block's deposits)
_PAIRS = [a + b for a in ALPHABET for b in ALPHABET]
_SHIFTS = range(120, -1, -10)


def new_id(prefix: str) -> str:
    """``prefix_`` + 26 base32 characters: 48 bits of milliseconds, then 80 random bits.

    The 128 bits are written big-endian, five bits a letter, the last letter padded with two
    zero bits (RFC 4648 base32 of the 16 bytes, re-lettered).
    """
    bits = (time.time_ns() // 1_000_000) << 82 | int.from_bytes(os.urandom(10), "big") << 2
    pairs = _PAIRS
    return prefix + "_" + "".join([pairs[(bits >> shift) & 1023] for shift in _SHIFTS])
