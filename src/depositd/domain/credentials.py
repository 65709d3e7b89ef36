"""End users' credentials: the password policy and the shape of an email address.

The policy follows NIST SP 800-63B: length matters, composition rules do not. A password
has 10 to 128 characters, is not one of the passwords every credential-stuffing list starts
with, does not contain the account's email name, and is not one character repeated or a
run like ``abcdefghij``. Nothing else is demanded: a long passphrase of lower-case words is
a good password.
"""

from __future__ import annotations

import itertools
import re
import unicodedata

from depositd.errors import InputError

MIN_LENGTH = 10
MAX_LENGTH = 128

#: passwords at the top of every leaked-password list that are 10 characters or longer
_COMMON = frozenset(
    {
        "1234567890",
        "12345678910",
        "123456789a",
        "0123456789",
        "1q2w3e4r5t",
        "1qaz2wsx3edc",
        "qwertyuiop",
        "qwerty1234",
        "qwerty12345",
        "asdfghjkl;",
        "password12",
        "password123",
        "password1234",
        "passw0rd123",
        "iloveyou12",
        "1234qwerasdf",
        "abcd123456",
        "a123456789",
        "zaq12wsxcde",
        "letmein123",
        "welcome123",
        "administrator",
        "football123",
        "basketball",
        "starwars123",
        "trustno1234",
        "changeme123",
        "qwer1234asdf",
    }
)

_EMAIL = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$")


class WeakPassword(InputError):
    slug = "weak-password"


class InvalidEmail(InputError):
    slug = "invalid-email"


def normalize_email(email: str) -> str:
    """The address as stored and compared: trimmed, lower-cased, checked for its shape."""
    address = email.strip().lower()
    if len(address) > 254 or not _EMAIL.fullmatch(address):
        raise InvalidEmail("not an email address (name@domain.tld)")
    return address


def check_password(password: str, email: str) -> None:
    """Raise ``WeakPassword`` with the reason the user can act on, or return."""
    text = unicodedata.normalize("NFKC", password)
    if len(text) < MIN_LENGTH:
        raise WeakPassword(f"use at least {MIN_LENGTH} characters")
    if len(text) > MAX_LENGTH:
        raise WeakPassword(f"use at most {MAX_LENGTH} characters")
    folded = text.casefold()
    if folded in _COMMON:
        raise WeakPassword("this password is in every list of leaked passwords; choose another")
    if len(set(folded)) == 1 or _is_run(folded):
        raise WeakPassword("a repeated character or a run of keys is easy to guess")
    name = email.partition("@")[0].casefold()
    if len(name) >= 4 and name in folded:
        raise WeakPassword("do not use your email address in the password")


def _is_run(text: str) -> bool:
    """Every character one above (or below) the one before: ``abcdef…``, ``987654…``."""
    steps = {ord(b) - ord(a) for a, b in itertools.pairwise(text)}
    return steps in ({1}, {-1})
