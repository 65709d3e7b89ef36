"""Whether a provider's callback is signed with a secret we share, checked over the raw body.

Every scheme compares in constant time, against every secret (several while one is rotated)
and every signature the request carries. A scheme that signs a timestamp is checked for the
signature first and the time after, so ``timestamp_outside_window`` always means a genuine
message that is stale or from a skewed clock, never a forgery.

Two schemes sign the parsed body, not its bytes, so we parse it (the standard ``json``
module, refusing duplicate keys, ``NaN`` and ``Infinity``) and write it again:

* ``nowpayments`` signs the body re-serialised with keys sorted at every level and compact
  separators, as NOWPayments documents for its IPN callbacks. Numbers are written back in the
  exact text they had in the body (not through ``float``, which would turn ``1e-7`` into
  ``1e-07``), so the check holds as long as the sender signs numbers in the form it sends
  them. A sender that signs ``1.5`` but sends ``1.50`` cannot be verified.
* ``md5_sign`` — ``md5("k1=v1&k2=v2&...&key=<secret>")`` over the body's other fields, as
  several wallet-as-a-service providers do — is WEAK: MD5 has practical collisions and such
  secrets are often short enough to guess offline from one signed callback. It is here only
  for providers that offer nothing better; prefer any other scheme.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, assert_never


class SignatureScheme(StrEnum):
    #: https://www.standardwebhooks.com — ``webhook-id``, ``webhook-timestamp`` and
    #: ``webhook-signature`` (or the same with ``svix-``); secret ``whsec_<base64 key>``
    STANDARD_WEBHOOKS = "standard_webhooks"
    #: ``stripe-signature: t=<unix>,v1=<hex>[,v1=<hex>...]``; the secret is used verbatim
    STRIPE = "stripe"
    #: HMAC-SHA256 of the raw body in one header, hex or base64, ``sha256=`` optional
    HMAC_SHA256 = "hmac_sha256"
    #: HMAC-SHA512 of the raw body in one header, hex or base64, ``sha512=`` optional
    HMAC_SHA512 = "hmac_sha512"
    #: ``x-nowpayments-sig``: hex HMAC-SHA512 of the body as key-sorted compact JSON
    NOWPAYMENTS = "nowpayments"
    #: hex MD5 in a field of the JSON body: weak, see the module docstring
    MD5_SIGN = "md5_sign"

    @property
    def weak(self) -> bool:
        """Whether a forged or guessed signature is within reach of an attacker."""
        return self is SignatureScheme.MD5_SIGN


@dataclass(frozen=True)
class SchemeSettings:
    """How one provider signs its callbacks; ``ValueError`` if a secret cannot be used."""

    scheme: SignatureScheme
    #: every secret currently valid (several while a secret is rotated); a match with any one
    #: passes. Left out of ``repr`` so logging the settings cannot leak them.
    secrets: tuple[str, ...] = field(repr=False)
    #: how far a signed timestamp may be from our clock (schemes that sign one:
    #: standard_webhooks, stripe)
    tolerance_seconds: int = 300
    #: hmac_*: the header carrying the signature (lower-case name)
    header: str = "x-signature"
    #: hmac_*: how the digest is written in the header
    encoding: Literal["hex", "base64"] = "hex"
    #: md5_sign: the body field holding the signature
    sign_field: str = "sign"

    def __post_init__(self) -> None:
        if not self.secrets:
            raise ValueError(f"{self.scheme}: no secret")
        for number, secret in enumerate(self.secrets, start=1):
            if not secret:
                raise ValueError(f"{self.scheme}: secret {number} is empty")
            if self.scheme is SignatureScheme.STANDARD_WEBHOOKS:
                try:
                    _standard_webhooks_key(secret)
                except ValueError as exc:
                    raise ValueError(f"{self.scheme}: secret {number}: {exc}") from None
        if self.tolerance_seconds < 0:
            raise ValueError(f"{self.scheme}: tolerance_seconds must not be negative")


class SignatureRejected(Exception):
    """The request carries no valid signature; ``code`` is stable, ``str()`` a one-line reason.

    Codes: ``signature_missing`` (header or field absent or empty), ``signature_malformed``
    (cannot be parsed), ``signature_mismatch`` (no secret matches), ``timestamp_outside_window``
    (genuine, but signed too long ago or too far ahead), ``body_not_json`` (a scheme that signs
    the parsed body got something that is not a JSON object). A reason never holds a secret nor
    the signature we expected.
    """

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True)
class Verified:
    #: the provider's id for this message when the scheme carries one in its headers
    #: (standard_webhooks: webhook-id), else None
    message_id: str | None
    #: the signed timestamp (Unix seconds) when the scheme signs one, else None
    timestamp: int | None


def verify_signature(
    settings: SchemeSettings, headers: Mapping[str, str], body: bytes, now: float
) -> Verified:
    """Raise SignatureRejected unless ``body`` is signed with one of ``settings.secrets``.

    ``headers`` have lower-case names. ``now`` is Unix seconds (the caller's clock; tests pass
    fixed values).
    """
    match settings.scheme:
        case SignatureScheme.STANDARD_WEBHOOKS:
            return _verify_standard_webhooks(settings, headers, body, now)
        case SignatureScheme.STRIPE:
            return _verify_stripe(settings, headers, body, now)
        case SignatureScheme.HMAC_SHA256 | SignatureScheme.HMAC_SHA512:
            return _verify_hmac(settings, headers, body)
        case SignatureScheme.NOWPAYMENTS:
            return _verify_nowpayments(settings, headers, body)
        case SignatureScheme.MD5_SIGN:
            return _verify_md5_sign(settings, body)
        case _:
            assert_never(settings.scheme)


# ---- the schemes


def _verify_standard_webhooks(
    settings: SchemeSettings, headers: Mapping[str, str], body: bytes, now: float
) -> Verified:
    # one prefix for all three headers: an id from one set and a signature from the other
    # were never signed together
    svix = "svix-signature" in headers and "webhook-signature" not in headers
    prefix = "svix-" if svix else "webhook-"
    message_id = _header(headers, prefix + "id")
    timestamp_text = _header(headers, prefix + "timestamp")
    signature_header = _header(headers, prefix + "signature")
    timestamp = _unix_seconds(timestamp_text, prefix + "timestamp")
    given: list[bytes] = []
    for item in signature_header.split():
        version, comma, encoded = item.partition(",")
        if not comma:
            raise SignatureRejected(
                "signature_malformed", f"{prefix}signature is not a list of <version>,<signature>"
            )
        if version == "v1":  # others (v1a: asymmetric) are not ours to check
            given.append(_digest(encoded, "base64", _SHA256_BYTES, f"a v1 {prefix}signature"))
    if not given:
        raise SignatureRejected("signature_missing", f"{prefix}signature has no v1 signature")
    signed = f"{message_id}.{timestamp_text}.".encode() + body
    keys = (_standard_webhooks_key(secret) for secret in settings.secrets)
    _require_match((_hmac(key, signed, "sha256") for key in keys), given)
    _require_within(timestamp, now, settings.tolerance_seconds)
    return Verified(message_id=message_id, timestamp=timestamp)


def _verify_stripe(
    settings: SchemeSettings, headers: Mapping[str, str], body: bytes, now: float
) -> Verified:
    header = _header(headers, "stripe-signature")
    timestamp_text: str | None = None
    given: list[bytes] = []
    for item in header.split(","):
        name, equals, value = item.strip().partition("=")
        if not equals:
            raise SignatureRejected(
                "signature_malformed", "stripe-signature is not a list of <key>=<value>"
            )
        if name == "t":
            if timestamp_text is not None:
                raise SignatureRejected("signature_malformed", "stripe-signature has two t=")
            timestamp_text = value
        elif name == "v1":  # other schemes are ignored against downgrades, as Stripe advises
            given.append(_digest(value, "hex", _SHA256_BYTES, "a v1 stripe-signature"))
    if timestamp_text is None:
        raise SignatureRejected("signature_malformed", "stripe-signature has no t=")
    timestamp = _unix_seconds(timestamp_text, "t= in stripe-signature")
    if not given:
        raise SignatureRejected("signature_missing", "stripe-signature has no v1 signature")
    signed = f"{timestamp_text}.".encode() + body
    _require_match((_hmac(secret.encode(), signed, "sha256") for secret in settings.secrets), given)
    _require_within(timestamp, now, settings.tolerance_seconds)
    return Verified(message_id=None, timestamp=timestamp)


def _verify_hmac(settings: SchemeSettings, headers: Mapping[str, str], body: bytes) -> Verified:
    if settings.scheme is SignatureScheme.HMAC_SHA256:
        algorithm, size = "sha256", _SHA256_BYTES
    else:
        algorithm, size = "sha512", _SHA512_BYTES
    name = settings.header.lower()
    value = _header(headers, name)
    prefix = algorithm + "="
    if value[: len(prefix)].lower() == prefix:  # GitHub style: sha256=<hex>
        value = value[len(prefix) :]
    given = _digest(value, settings.encoding, size, name)
    _require_match(
        (_hmac(secret.encode(), body, algorithm) for secret in settings.secrets), [given]
    )
    return Verified(message_id=None, timestamp=None)


def _verify_nowpayments(
    settings: SchemeSettings, headers: Mapping[str, str], body: bytes
) -> Verified:
    signature = _header(headers, "x-nowpayments-sig")
    given = _digest(signature, "hex", _SHA512_BYTES, "x-nowpayments-sig")
    signed = _canonical_json(_json_object(body)).encode()
    _require_match(
        (_hmac(secret.encode(), signed, "sha512") for secret in settings.secrets), [given]
    )
    return Verified(message_id=None, timestamp=None)


def _verify_md5_sign(settings: SchemeSettings, body: bytes) -> Verified:
    fields = _json_object(body)
    sign = fields.get(settings.sign_field)
    if sign is None or sign == "":
        raise SignatureRejected("signature_missing", f"the body has no {settings.sign_field!r}")
    if not isinstance(sign, str) or isinstance(sign, _NumberText):
        raise SignatureRejected("signature_malformed", f"{settings.sign_field!r} is not a string")
    given = _digest(sign, "hex", _MD5_BYTES, repr(settings.sign_field))
    pairs = [
        f"{name}={_md5_sign_value(value)}"
        for name, value in sorted(fields.items())
        if name != settings.sign_field and value is not None and value != ""
    ]
    _require_match(
        (_md5("&".join([*pairs, f"key={secret}"])) for secret in settings.secrets), [given]
    )
    return Verified(message_id=None, timestamp=None)


def _md5_sign_value(value: Any) -> str:
    if isinstance(value, str):  # a number too: its text as written
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return _canonical_json(value)  # an object or an array


def _md5(text: str) -> bytes:
    return hashlib.md5(text.encode()).digest()  # noqa: S324 - the provider's scheme, see above


# ---- shared pieces

#: the longest timestamp we read: twelve digits reach past the year 30000
_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_SHA256_BYTES = 32
_SHA512_BYTES = 64
_MD5_BYTES = 16


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name, "").strip()
    if not value:
        raise SignatureRejected("signature_missing", f"no {name} header")
    return value


def _unix_seconds(text: str, where: str) -> int:
    if not _UNIX_SECONDS.fullmatch(text):
        raise SignatureRejected("signature_malformed", f"{where} is not Unix seconds")
    return int(text)


def _digest(text: str, encoding: Literal["hex", "base64"], size: int, where: str) -> bytes:
    """The digest written in ``text``; malformed unless it is ``size`` bytes long."""
    raw: bytes | None
    if encoding == "hex":
        raw = bytes.fromhex(text) if _HEX.fullmatch(text) else None
    else:
        try:
            raw = base64.b64decode(text, validate=True)
        except binascii.Error:
            raw = None
    if raw is None or len(raw) != size:
        raise SignatureRejected(
            "signature_malformed", f"{where} is not a {size}-byte digest in {encoding}"
        )
    return raw


def _hmac(key: bytes, message: bytes, algorithm: str) -> bytes:
    return hmac.new(key, message, algorithm).digest()


def _require_match(expected: Iterable[bytes], given: Sequence[bytes]) -> None:
    # no early exit: every secret meets every signature, so timing says nothing of which
    matched = False
    for digest in expected:
        for signature in given:
            matched |= hmac.compare_digest(digest, signature)
    if not matched:
        raise SignatureRejected("signature_mismatch", "no shared secret matches the signature")


def _require_within(timestamp: int, now: float, tolerance: int) -> None:
    skew = timestamp - now
    if abs(skew) > tolerance:
        when = f"{-skew:.0f} s old" if skew < 0 else f"{skew:.0f} s in the future"
        raise SignatureRejected(
            "timestamp_outside_window",
            f"the signed timestamp is {when}; at most {tolerance} s either way is allowed",
        )


def _standard_webhooks_key(secret: str) -> bytes:
    """The key in a ``whsec_<base64>`` secret (the prefix optional, padding too)."""
    encoded = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise ValueError("not whsec_ followed by base64") from None
    if not key:
        raise ValueError("no key after whsec_")
    return key


# ---- signed JSON


#: deepest nesting of objects and arrays written back (no callback needs more; the limit
#: keeps a hostile body from exhausting the stack)
MAX_JSON_DEPTH = 32


class _NumberText(str):
    """A JSON number kept as the text it was written in."""

    __slots__ = ()


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(
            body.decode("utf-8"),
            parse_int=_NumberText,
            parse_float=_NumberText,
            parse_constant=_refuse_constant,
            object_pairs_hook=_refuse_repeated_keys,
        )
    except UnicodeDecodeError:
        raise SignatureRejected("body_not_json", "the body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise SignatureRejected(
            "body_not_json", f"the body is not JSON: {exc.msg} at {exc.lineno}:{exc.colno}"
        ) from None
    except ValueError as exc:  # from the hooks: their messages hold no body text
        raise SignatureRejected("body_not_json", f"the body is not plain JSON: {exc}") from None
    except RecursionError:
        raise SignatureRejected("body_not_json", "the body is nested too deeply") from None
    if not isinstance(parsed, dict):
        raise SignatureRejected("body_not_json", "the body is not a JSON object")
    return parsed


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _refuse_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # parsers disagree on which of two values wins; what we verify must be what is read
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ValueError("a key is repeated")
    return document


def _canonical_json(value: Any, depth: int = 0) -> str:
    """``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``,
    but with numbers in the text they were parsed from."""
    if depth > MAX_JSON_DEPTH:
        raise SignatureRejected(
            "body_not_json", f"the body nests deeper than {MAX_JSON_DEPTH} levels"
        )
    if isinstance(value, _NumberText):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        members = (
            f"{json.dumps(name, ensure_ascii=False)}:{_canonical_json(member, depth + 1)}"
            for name, member in sorted(value.items())
        )
        return "{" + ",".join(members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_canonical_json(item, depth + 1) for item in value) + "]"
    return json.dumps(value)  # true, false, null
