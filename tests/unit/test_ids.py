import base64
import os
import re
import time
from unittest import mock

from depositd import ids
from depositd.ids import new_id

_RFC4648_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", ids.ALPHABET.encode())


def _reference(millis: int, random_part: bytes) -> str:
    raw = millis.to_bytes(6, "big") + random_part
    return base64.b32encode(raw)[:26].translate(_RFC4648_TO_CROCKFORD).decode()


def test_matches_rfc4648_base32_of_the_time_and_random_bytes() -> None:
    for _ in range(2_000):
        millis = int.from_bytes(os.urandom(6), "big")
        random_part = os.urandom(10)
        with (
            mock.patch.object(ids.time, "time_ns", return_value=millis * 1_000_000 + 999),
            mock.patch.object(ids.os, "urandom", return_value=random_part),
        ):
            assert new_id("dep") == f"dep_{_reference(millis, random_part)}"


def test_extremes() -> None:
    for millis, random_part in [(0, bytes(10)), (2**48 - 1, b"\xff" * 10)]:
        with (
            mock.patch.object(ids.time, "time_ns", return_value=millis * 1_000_000),
            mock.patch.object(ids.os, "urandom", return_value=random_part),
        ):
            assert new_id("x") == f"x_{_reference(millis, random_part)}"
    assert new_id("x").startswith("x_")


def test_ids_sort_by_creation_time_and_are_unique() -> None:
    made = []
    for _ in range(200):
        made.append(new_id("evt"))
        time.sleep(0.0005)
    assert all(re.fullmatch(r"evt_[0-9a-hjkmnp-tv-z]{26}", i) for i in made)
    assert len(set(made)) == len(made)
    stamps = [i[4:13] for i in made]  # the first 45 bits: milliseconds only
    assert stamps == sorted(stamps)
