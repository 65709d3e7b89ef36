"""Inbound callback signatures: made by libraries we do not own where one exists, else by hand."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import standardwebhooks.webhooks
import stripe
import svix.webhooks

from depositd.providers.schemes import (
    SchemeSettings,
    SignatureRejected,
    SignatureScheme,
    Verified,
    verify_signature,
)

#: our clock in every test that does not compare with a library's own clock
NOW = 1_700_000_000
BODY = b'{"type":"deposit.confirmed","data":{"id":"dep_1","amount":"25.5","asset":"USDT"}}'


def settings(scheme: SignatureScheme, *secrets: str, **options: Any) -> SchemeSettings:
    return SchemeSettings(scheme=scheme, secrets=secrets, **options)


def rejected(scheme: SchemeSettings, headers: dict[str, str], body: bytes, now: float = NOW) -> str:
    """The rejection code, having checked that its reason gives no secret away."""
    with pytest.raises(SignatureRejected) as caught:
        verify_signature(scheme, headers, body, now)
    reason = str(caught.value)
    assert reason
    assert "\n" not in reason
    for secret in scheme.secrets:
        assert secret not in reason
        assert secret.removeprefix("whsec_") not in reason
    return caught.value.code


# ---- standard_webhooks

#: the Standard Webhooks specification's published test vector
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_HEADERS = {
    "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "webhook-timestamp": "1614265330",
    "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
}
VECTOR_BODY = b'{"test": 2432232314}'

OLD_WHSEC = "whsec_" + base64.b64encode(b"an old key of thirty-two bytes!!").decode()
NEW_WHSEC = "whsec_" + base64.b64encode(b"the new key, also 32 bytes long.").decode()


def standard_headers(
    secret: str, body: bytes = BODY, at: int = NOW, msg_id: str = "msg_1", prefix: str = "webhook-"
) -> dict[str, str]:
    signature = standardwebhooks.webhooks.Webhook(secret).sign(
        msg_id, datetime.fromtimestamp(at, UTC), body.decode()
    )
    return {
        f"{prefix}id": msg_id,
        f"{prefix}timestamp": str(at),
        f"{prefix}signature": signature,
    }


def test_standard_webhooks_published_vector_verifies() -> None:
    scheme = settings(SignatureScheme.STANDARD_WEBHOOKS, VECTOR_SECRET)
    verified = verify_signature(scheme, VECTOR_HEADERS, VECTOR_BODY, now=1614265330)
    assert verified == Verified(message_id="msg_p5jXN8AQM9LWM0D4loKWxJek", timestamp=1614265330)


def test_standard_webhooks_signed_by_the_standardwebhooks_library() -> None:
    scheme = settings(SignatureScheme.STANDARD_WEBHOOKS, NEW_WHSEC)
    verified = verify_signature(scheme, standard_headers(NEW_WHSEC), BODY, NOW)
    assert verified == Verified(message_id="msg_1", timestamp=NOW)


def test_standard_webhooks_signed_by_svix_with_svix_headers() -> None:
    signature = svix.webhooks.Webhook(NEW_WHSEC).sign(
        "msg_svix", datetime.fromtimestamp(NOW, UTC), BODY.decode()
    )
    headers = {"svix-id": "msg_svix", "svix-timestamp": str(NOW), "svix-signature": signature}
    scheme = settings(SignatureScheme.STANDARD_WEBHOOKS, NEW_WHSEC)
    assert verify_signature(scheme, headers, BODY, NOW) == Verified("msg_svix", NOW)
    assert rejected(scheme, headers, BODY + b" ") == "signature_mismatch"


def test_standard_webhooks_secret_without_the_whsec_prefix() -> None:
    scheme = settings(SignatureScheme.STANDARD_WEBHOOKS, NEW_WHSEC.removeprefix("whsec_"))
    assert verify_signature(scheme, standard_headers(NEW_WHSEC), BODY, NOW).message_id == "msg_1"


def test_standard_webhooks_during_a_rotation_either_secret_verifies() -> None:
    scheme = settings(SignatureScheme.STANDARD_WEBHOOKS, NEW_WHSEC, OLD_WHSEC)
    for secret in (OLD_WHSEC, NEW_WHSEC):
        verify_signature(scheme, standard_headers(secret), BODY, NOW)


def test_standard_webhooks_one_matching_signature_among_several_is_enough() -> None:
    stranger = "whsec_" + base64.b64encode(b"a key we have never been given..").decode()
    headers = standard_headers(NEW_WHSEC)
    theirs = standard_headers(stranger)["webhook-signature"]
    headers["webhook-signature"] = (
        f"{theirs} v1a,c29tZXRoaW5nIGVsc2U= {headers['webhook-signature']}"
    )
    verify_signature(settings(SignatureScheme.STANDARD_WEBHOOKS, NEW_WHSEC), headers, BODY, NOW)


def test_standard_webhooks_tampered_body_or_wrong_secret_is_a_mismatch() -> None:
    scheme = settings(SignatureScheme.STANDARD_WEBHOOKS, NEW_WHSEC)
    tampered = BODY.replace(b"25.5", b"255")
    assert rejected(scheme, standard_headers(NEW_WHSEC), tampered) == "signature_mismatch"
    assert rejected(scheme, standard_headers(OLD_WHSEC), BODY) == "signature_mismatch"
    other_id = standard_headers(NEW_WHSEC) | {"webhook-id": "msg_2"}
    assert rejected(scheme, other_id, BODY) == "signature_mismatch"


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_standard_webhooks_missing_header(missing: str) -> None:
    headers = standard_headers(NEW_WHSEC)
    del headers[missing]
    scheme = settings(SignatureScheme.STANDARD_WEBHOOKS, NEW_WHSEC)
    assert rejected(scheme, headers, BODY) == "signature_missing"
    assert rejected(scheme, headers | {missing: ""}, BODY) == "signature_missing"


@pytest.mark.parametrize(
    ("header", "value", "code"),
    [
        ("webhook-timestamp", "soon", "signature_malformed"),
        ("webhook-timestamp", "1700000000.5", "signature_malformed"),
        ("webhook-signature", "v1,not base64!", "signature_malformed"),
        ("webhook-signature", "v1,c2hvcnQ=", "signature_malformed"),  # not 32 bytes
        ("webhook-signature", "no-comma-here", "signature_malformed"),
        ("webhook-signature", "v2,c29tZXRoaW5nIGVsc2U=", "signature_missing"),
    ],
)
def test_standard_webhooks_unreadable_headers(header: str, value: str, code: str) -> None:
    headers = standard_headers(NEW_WHSEC) | {header: value}
    assert rejected(settings(SignatureScheme.STANDARD_WEBHOOKS, NEW_WHSEC), headers, BODY) == code


@pytest.mark.parametrize("skew", [-301, 301, -86_400, 86_400])
def test_standard_webhooks_timestamp_outside_the_window(skew: int) -> None:
    scheme = settings(SignatureScheme.STANDARD_WEBHOOKS, NEW_WHSEC)
    headers = standard_headers(NEW_WHSEC, at=NOW + skew)
    assert rejected(scheme, headers, BODY) == "timestamp_outside_window"


@pytest.mark.parametrize("skew", [-300, -1, 0, 1, 300])
def test_standard_webhooks_timestamp_inside_the_window(skew: int) -> None:
    scheme = settings(SignatureScheme.STANDARD_WEBHOOKS, NEW_WHSEC)
    headers = standard_headers(NEW_WHSEC, at=NOW + skew)
    assert verify_signature(scheme, headers, BODY, NOW).timestamp == NOW + skew


def test_standard_webhooks_tolerance_is_configurable() -> None:
    scheme = settings(SignatureScheme.STANDARD_WEBHOOKS, NEW_WHSEC, tolerance_seconds=30)
    assert rejected(scheme, standard_headers(NEW_WHSEC, at=NOW - 31), BODY) == (
        "timestamp_outside_window"
    )
    verify_signature(scheme, standard_headers(NEW_WHSEC, at=NOW - 30), BODY, NOW)


def test_standard_webhooks_secret_that_is_not_base64_is_refused_without_repeating_it() -> None:
    with pytest.raises(ValueError, match="secret 2") as caught:
        settings(SignatureScheme.STANDARD_WEBHOOKS, NEW_WHSEC, "whsec_not*base64")
    assert "not*base64" not in str(caught.value)


# ---- stripe

STRIPE_OLD = "whsec_old_stripe_endpoint_secret"
STRIPE_NEW = "whsec_new_stripe_endpoint_secret"
STRIPE_EVENT = json.dumps(
    {"id": "evt_1", "object": "event", "type": "charge.succeeded", "data": {"object": {}}}
).encode()


def stripe_headers(secret: str, body: bytes = STRIPE_EVENT, at: int = NOW) -> dict[str, str]:
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), secret, at)
    return {"stripe-signature": header}


def test_stripe_signed_by_the_stripe_library() -> None:
    scheme = settings(SignatureScheme.STRIPE, STRIPE_NEW)
    verified = verify_signature(scheme, stripe_headers(STRIPE_NEW), STRIPE_EVENT, NOW)
    assert verified == Verified(message_id=None, timestamp=NOW)


def test_stripe_and_our_verifier_agree() -> None:
    now = time.time()  # construct_event reads the real clock
    scheme = settings(SignatureScheme.STRIPE, STRIPE_NEW)
    headers = stripe_headers(STRIPE_NEW, at=int(now))
    verify_signature(scheme, headers, STRIPE_EVENT, now)
    event = stripe.Webhook.construct_event(STRIPE_EVENT, headers["stripe-signature"], STRIPE_NEW)
    assert event.id == "evt_1"

    tampered = STRIPE_EVENT.replace(b"evt_1", b"evt_2")
    assert rejected(scheme, headers, tampered, now) == "signature_mismatch"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(tampered, headers["stripe-signature"], STRIPE_NEW)

    stale = stripe_headers(STRIPE_NEW, at=int(now) - 600)
    assert rejected(scheme, stale, STRIPE_EVENT, now) == "timestamp_outside_window"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(STRIPE_EVENT, stale["stripe-signature"], STRIPE_NEW)


def test_stripe_secret_is_used_verbatim_not_base64_decoded() -> None:
    signed = f"{NOW}.".encode() + STRIPE_EVENT
    digest = hmac.new(STRIPE_NEW.encode(), signed, hashlib.sha256).hexdigest()
    headers = {"stripe-signature": f"t={NOW},v1={digest}"}
    verify_signature(settings(SignatureScheme.STRIPE, STRIPE_NEW), headers, STRIPE_EVENT, NOW)


def test_stripe_during_a_rotation_either_secret_verifies() -> None:
    scheme = settings(SignatureScheme.STRIPE, STRIPE_NEW, STRIPE_OLD)
    for secret in (STRIPE_OLD, STRIPE_NEW):
        verify_signature(scheme, stripe_headers(secret), STRIPE_EVENT, NOW)


def test_stripe_any_v1_among_several_is_enough() -> None:
    ours = stripe_headers(STRIPE_NEW)["stripe-signature"].split(",")[1]
    theirs = stripe_headers("whsec_someone_else")["stripe-signature"]
    headers = {"stripe-signature": f"{theirs},{ours},v0={'0' * 64}"}
    verify_signature(settings(SignatureScheme.STRIPE, STRIPE_NEW), headers, STRIPE_EVENT, NOW)


def test_stripe_tampered_body_or_wrong_secret_is_a_mismatch() -> None:
    scheme = settings(SignatureScheme.STRIPE, STRIPE_NEW)
    tampered = STRIPE_EVENT.replace(b"charge", b"refund")
    assert rejected(scheme, stripe_headers(STRIPE_NEW), tampered) == "signature_mismatch"
    assert rejected(scheme, stripe_headers(STRIPE_OLD), STRIPE_EVENT) == "signature_mismatch"


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "signature_missing"),
        ("", "signature_missing"),
        ("t=1700000000", "signature_missing"),  # no v1
        ("v1=" + "ab" * 32, "signature_malformed"),  # no t=
        ("t=yesterday,v1=" + "ab" * 32, "signature_malformed"),
        ("t=1700000000,v1=xyz", "signature_malformed"),
        ("t=1700000000,t=1700000001,v1=" + "ab" * 32, "signature_malformed"),
        ("garbage", "signature_malformed"),
    ],
)
def test_stripe_missing_or_unreadable_header(header: str | None, code: str) -> None:
    headers = {} if header is None else {"stripe-signature": header}
    assert rejected(settings(SignatureScheme.STRIPE, STRIPE_NEW), headers, STRIPE_EVENT) == code


@pytest.mark.parametrize("skew", [-301, 301, -86_400, 86_400])
def test_stripe_timestamp_outside_the_window(skew: int) -> None:
    headers = stripe_headers(STRIPE_NEW, at=NOW + skew)
    scheme = settings(SignatureScheme.STRIPE, STRIPE_NEW)
    assert rejected(scheme, headers, STRIPE_EVENT) == "timestamp_outside_window"


@pytest.mark.parametrize("skew", [-300, 0, 300])
def test_stripe_timestamp_inside_the_window(skew: int) -> None:
    headers = stripe_headers(STRIPE_NEW, at=NOW + skew)
    scheme = settings(SignatureScheme.STRIPE, STRIPE_NEW)
    assert verify_signature(scheme, headers, STRIPE_EVENT, NOW).timestamp == NOW + skew


# ---- hmac_sha256 / hmac_sha512

HMAC_OLD = "old-shared-secret"
HMAC_NEW = "new-shared-secret"


def hmac_header(secret: str, algorithm: str, encoding: str, body: bytes = BODY) -> str:
    digest = hmac.new(secret.encode(), body, algorithm).digest()
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


@pytest.mark.parametrize(
    ("scheme", "algorithm", "encoding", "written"),
    [
        (SignatureScheme.HMAC_SHA256, "sha256", "hex", "{}"),
        (SignatureScheme.HMAC_SHA256, "sha256", "hex", "sha256={}"),  # GitHub style
        (SignatureScheme.HMAC_SHA256, "sha256", "base64", "{}"),
        (SignatureScheme.HMAC_SHA512, "sha512", "hex", "{}"),
        (SignatureScheme.HMAC_SHA512, "sha512", "hex", "sha512={}"),
        (SignatureScheme.HMAC_SHA512, "sha512", "base64", "{}"),
    ],
)
def test_hmac_signatures_verify(
    scheme: SignatureScheme, algorithm: str, encoding: Any, written: str
) -> None:
    config = settings(scheme, HMAC_NEW, header="x-hub-signature", encoding=encoding)
    headers = {"x-hub-signature": written.format(hmac_header(HMAC_NEW, algorithm, encoding))}
    assert verify_signature(config, headers, BODY, NOW) == Verified(None, None)
    assert rejected(config, headers, BODY + b"\n") == "signature_mismatch"


def test_hmac_hex_is_case_insensitive_and_the_default_header_is_x_signature() -> None:
    headers = {"x-signature": hmac_header(HMAC_NEW, "sha256", "hex").upper()}
    verify_signature(settings(SignatureScheme.HMAC_SHA256, HMAC_NEW), headers, BODY, NOW)


def test_hmac_during_a_rotation_either_secret_verifies() -> None:
    scheme = settings(SignatureScheme.HMAC_SHA512, HMAC_NEW, HMAC_OLD)
    for secret in (HMAC_OLD, HMAC_NEW):
        headers = {"x-signature": hmac_header(secret, "sha512", "hex")}
        verify_signature(scheme, headers, BODY, NOW)


def test_hmac_tampered_body_or_wrong_secret_is_a_mismatch() -> None:
    scheme = settings(SignatureScheme.HMAC_SHA256, HMAC_NEW)
    headers = {"x-signature": hmac_header(HMAC_NEW, "sha256", "hex")}
    assert rejected(scheme, headers, BODY.replace(b"25.5", b"255")) == "signature_mismatch"
    wrong = {"x-signature": hmac_header(HMAC_OLD, "sha256", "hex")}
    assert rejected(scheme, wrong, BODY) == "signature_mismatch"


def test_hmac_signature_of_the_other_algorithm_is_not_accepted() -> None:
    headers = {"x-signature": hmac_header(HMAC_NEW, "sha512", "hex")}
    assert rejected(settings(SignatureScheme.HMAC_SHA256, HMAC_NEW), headers, BODY) == (
        "signature_malformed"
    )


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "signature_missing"),
        ({"x-signature": ""}, "signature_missing"),
        ({"x-other": "ab" * 32}, "signature_missing"),
        ({"x-signature": "zz" * 32}, "signature_malformed"),
        ({"x-signature": "abc"}, "signature_malformed"),
        ({"x-signature": "sha1=" + "ab" * 20}, "signature_malformed"),
    ],
)
def test_hmac_missing_or_unreadable_header(headers: dict[str, str], code: str) -> None:
    assert rejected(settings(SignatureScheme.HMAC_SHA256, HMAC_NEW), headers, BODY) == code


def test_hmac_base64_that_is_not_base64_is_malformed() -> None:
    scheme = settings(SignatureScheme.HMAC_SHA256, HMAC_NEW, encoding="base64")
    assert rejected(scheme, {"x-signature": "ab" * 32}, BODY) == "signature_malformed"


# ---- nowpayments

IPN_OLD = "old-ipn-secret"
IPN_NEW = "new-ipn-secret"
#: keys not in sorted order, at the top and in the nested object, as a provider may send them
IPN_BODY = (
    b'{"payment_status":"finished","payment_id":5077125051,"pay_address":"0xabc",'
    b'"fee":{"withdrawalFee":0,"depositFee":0.00012,"currency":"usdttrc20"},'
    b'"pay_amount":155.38559757,"order_id":"dep_1","order_description":"caf\xc3\xa9"}'
)


def nowpayments_signature(secret: str, body: bytes) -> str:
    """As NOWPayments documents it: HMAC-SHA512 over the body with keys sorted, compact."""
    parsed = json.loads(body)
    signed = json.dumps(parsed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hmac.new(secret.encode(), signed.encode(), hashlib.sha512).hexdigest()


def test_nowpayments_signature_over_the_sorted_body_verifies() -> None:
    headers = {"x-nowpayments-sig": nowpayments_signature(IPN_NEW, IPN_BODY)}
    scheme = settings(SignatureScheme.NOWPAYMENTS, IPN_NEW)
    assert verify_signature(scheme, headers, IPN_BODY, NOW) == Verified(None, None)


def test_nowpayments_key_order_and_whitespace_do_not_matter() -> None:
    headers = {"x-nowpayments-sig": nowpayments_signature(IPN_NEW, IPN_BODY)}
    reordered = json.dumps(dict(reversed(json.loads(IPN_BODY).items())), indent=2).encode()
    assert reordered != IPN_BODY
    verify_signature(settings(SignatureScheme.NOWPAYMENTS, IPN_NEW), headers, reordered, NOW)


def test_nowpayments_numbers_are_signed_in_the_text_they_are_sent_in() -> None:
    # a Node sender writes 1e-7 where Python would write 1e-07
    body = b'{"pay_amount":1e-7,"actually_paid":0}'
    signed = b'{"actually_paid":0,"pay_amount":1e-7}'
    digest = hmac.new(IPN_NEW.encode(), signed, hashlib.sha512).hexdigest()
    scheme = settings(SignatureScheme.NOWPAYMENTS, IPN_NEW)
    verify_signature(scheme, {"x-nowpayments-sig": digest}, body, NOW)


def test_nowpayments_during_a_rotation_either_secret_verifies() -> None:
    scheme = settings(SignatureScheme.NOWPAYMENTS, IPN_NEW, IPN_OLD)
    for secret in (IPN_OLD, IPN_NEW):
        headers = {"x-nowpayments-sig": nowpayments_signature(secret, IPN_BODY)}
        verify_signature(scheme, headers, IPN_BODY, NOW)


def test_nowpayments_tampered_body_or_wrong_secret_is_a_mismatch() -> None:
    scheme = settings(SignatureScheme.NOWPAYMENTS, IPN_NEW)
    headers = {"x-nowpayments-sig": nowpayments_signature(IPN_NEW, IPN_BODY)}
    tampered = IPN_BODY.replace(b'"withdrawalFee":0', b'"withdrawalFee":1')
    assert rejected(scheme, headers, tampered) == "signature_mismatch"
    wrong = {"x-nowpayments-sig": nowpayments_signature(IPN_OLD, IPN_BODY)}
    assert rejected(scheme, wrong, IPN_BODY) == "signature_mismatch"


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "signature_missing"),
        ({"x-nowpayments-sig": " "}, "signature_missing"),
        ({"x-nowpayments-sig": "ab" * 32}, "signature_malformed"),  # a SHA-256 length
        ({"x-nowpayments-sig": "not hex"}, "signature_malformed"),
    ],
)
def test_nowpayments_missing_or_unreadable_header(headers: dict[str, str], code: str) -> None:
    assert rejected(settings(SignatureScheme.NOWPAYMENTS, IPN_NEW), headers, IPN_BODY) == code


@pytest.mark.parametrize(
    "body",
    [
        b"payment_status=finished",
        b'["not", "an", "object"]',
        b'"text"',
        b'{"caf\xe9": 1}',  # Latin-1, not UTF-8
        b'{"pay_amount": NaN}',
        b'{"payment_id": 1, "payment_id": 2}',  # which one was signed?
        b'{"a":' * 40 + b"1" + b"}" * 40,
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_nowpayments_body_that_is_not_a_json_object(body: bytes) -> None:
    headers = {"x-nowpayments-sig": "ab" * 64}
    assert rejected(settings(SignatureScheme.NOWPAYMENTS, IPN_NEW), headers, body) == (
        "body_not_json"
    )


# ---- md5_sign

MD5_OLD = "old-md5-key"
MD5_NEW = "new-md5-key"


def md5_sign(fields: dict[str, Any], secret: str) -> str:
    """The providers' recipe: non-empty fields sorted by key, ``k=v&...&key=<secret>``."""

    def text(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, dict | list):
            return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return str(value)

    pairs = [f"{k}={text(v)}" for k, v in sorted(fields.items()) if v is not None and v != ""]
    return md5_hex("&".join([*pairs, f"key={secret}"]))


def md5_hex(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - the scheme under test


MD5_FIELDS: dict[str, Any] = {
    "order_no": "dep_1",
    "amount": "25.5",
    "coin": "USDT",
    "confirmations": 12,
    "fee": 0.25,
    "final": True,
    "memo": "",
    "tag": None,
    "extra": {"network": "tron", "chain_id": 728126428},
    "note": "caf\u00e9",
}


def md5_body(fields: dict[str, Any], secret: str, sign_field: str = "sign") -> bytes:
    return json.dumps(fields | {sign_field: md5_sign(fields, secret)}).encode()


def test_md5_sign_verifies() -> None:
    scheme = settings(SignatureScheme.MD5_SIGN, MD5_NEW)
    assert verify_signature(scheme, {}, md5_body(MD5_FIELDS, MD5_NEW), NOW) == Verified(None, None)


def test_md5_sign_string_is_exactly_the_documented_one() -> None:
    signed = "amount=10.5&coin=USDT&n=1.50&ok=false&key=" + MD5_NEW
    sign = md5_hex(signed).upper()
    body = f'{{"ok":false,"n":1.50,"coin":"USDT","memo":"","amount":"10.5","sign":"{sign}"}}'
    verify_signature(settings(SignatureScheme.MD5_SIGN, MD5_NEW), {}, body.encode(), NOW)


def test_md5_sign_in_a_field_of_another_name() -> None:
    scheme = settings(SignatureScheme.MD5_SIGN, MD5_NEW, sign_field="signature")
    verify_signature(scheme, {}, md5_body(MD5_FIELDS, MD5_NEW, "signature"), NOW)


def test_md5_sign_during_a_rotation_either_secret_verifies() -> None:
    scheme = settings(SignatureScheme.MD5_SIGN, MD5_NEW, MD5_OLD)
    for secret in (MD5_OLD, MD5_NEW):
        verify_signature(scheme, {}, md5_body(MD5_FIELDS, secret), NOW)


def test_md5_sign_tampered_body_or_wrong_secret_is_a_mismatch() -> None:
    scheme = settings(SignatureScheme.MD5_SIGN, MD5_NEW)
    body = md5_body(MD5_FIELDS, MD5_NEW)
    assert rejected(scheme, {}, body.replace(b"25.5", b"255")) == "signature_mismatch"
    assert rejected(scheme, {}, body.replace(b'"tron"', b'"eth"')) == "signature_mismatch"
    assert rejected(scheme, {}, md5_body(MD5_FIELDS, MD5_OLD)) == "signature_mismatch"


@pytest.mark.parametrize(
    ("sign", "code"),
    [
        (None, "signature_missing"),
        ("", "signature_missing"),
        ("not hex at all", "signature_malformed"),
        ("ab" * 32, "signature_malformed"),  # not an MD5's length
        (1234, "signature_malformed"),
    ],
)
def test_md5_sign_missing_or_unreadable(sign: Any, code: str) -> None:
    fields = dict(MD5_FIELDS)
    if sign is not None:
        fields["sign"] = sign
    body = json.dumps(fields).encode()
    assert rejected(settings(SignatureScheme.MD5_SIGN, MD5_NEW), {}, body) == code


@pytest.mark.parametrize("body", [b"", b"sign=abc", b"[1, 2]", b"null"])
def test_md5_sign_body_that_is_not_a_json_object(body: bytes) -> None:
    assert rejected(settings(SignatureScheme.MD5_SIGN, MD5_NEW), {}, body) == "body_not_json"


# ---- settings


def test_only_md5_sign_is_weak() -> None:
    assert [scheme for scheme in SignatureScheme if scheme.weak] == [SignatureScheme.MD5_SIGN]


def test_settings_need_a_secret_and_never_show_them() -> None:
    with pytest.raises(ValueError, match="no secret"):
        settings(SignatureScheme.HMAC_SHA256)
    with pytest.raises(ValueError, match="secret 1 is empty"):
        settings(SignatureScheme.HMAC_SHA256, "")
    assert HMAC_NEW not in repr(settings(SignatureScheme.HMAC_SHA256, HMAC_NEW))
