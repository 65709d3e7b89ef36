"""Webhook signatures: the published vector, and verifiers we do not own accept ours."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import standardwebhooks
import svix

from depositd.delivery.signing import InvalidSecret, new_secret, signature_headers

#: the Standard Webhooks specification's published test vector
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_AT = datetime.fromtimestamp(1614265330, UTC)
VECTOR_BODY = '{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_published_test_vector_is_reproduced() -> None:
    headers = signature_headers(VECTOR_ID, VECTOR_BODY, [VECTOR_SECRET], VECTOR_AT)
    assert headers == {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": "1614265330",
        "webhook-signature": VECTOR_SIGNATURE,
    }


def body() -> str:
    return json.dumps({"type": "deposit.credited", "data": {"id": "dep_1", "amount": "25.5"}})


@pytest.mark.parametrize(
    "verifier", [standardwebhooks.Webhook, svix.Webhook], ids=["standardwebhooks", "svix"]
)
def test_libraries_we_do_not_own_verify_our_signatures(verifier: type) -> None:
    secret = new_secret()
    headers = signature_headers("evt_1", body(), [secret], datetime.now(UTC))
    verifier(secret).verify(body(), headers)  # raises unless the signature verifies
    with pytest.raises(Exception, match=r"(?i)signature"):
        verifier(new_secret()).verify(body(), headers)
    with pytest.raises(Exception, match=r"(?i)signature"):
        verifier(secret).verify(body().replace("25.5", "255"), headers)


@pytest.mark.parametrize(
    "verifier", [standardwebhooks.Webhook, svix.Webhook], ids=["standardwebhooks", "svix"]
)
def test_during_a_rotation_both_signatures_are_sent_and_each_verifies(verifier: type) -> None:
    old, new = new_secret(), new_secret()
    headers = signature_headers("evt_2", body(), [new, old], datetime.now(UTC))
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        verifier(secret).verify(body(), headers)  # raises unless one signature verifies


def test_a_new_secret_has_the_prefix_and_enough_randomness() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(secret) >= len("whsec_") + 32  # base64 of >= 24 bytes
    assert new_secret() != secret


def test_signing_needs_a_secret() -> None:
    with pytest.raises(InvalidSecret):
        signature_headers("evt_3", body(), [], datetime.now(UTC))
