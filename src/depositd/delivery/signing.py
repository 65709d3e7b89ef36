"""Standard Webhooks signatures (DESIGN §2), made with the specification's own library.

A receiver checks three headers: ``webhook-id`` (the event id: the same on every retry and
replay, so it can drop duplicates), ``webhook-timestamp`` (this attempt, Unix seconds) and
``webhook-signature`` — ``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, one per
secret, space-separated while a secret rotates, so receivers holding either secret verify.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from depositd.errors import InputError

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
#: random bytes in a new secret (the format asks for at least 24)
SECRET_BYTES = 32


class InvalidSecret(InputError):
    slug = "invalid-secret"


def new_secret() -> str:
    """A fresh endpoint secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signature_headers(
    event_id: str, body: str, endpoint_secrets: Sequence[str], at: datetime
) -> dict[str, str]:
    """The headers of one attempt to deliver ``body``, signed with every secret given."""
    if not endpoint_secrets:
        raise InvalidSecret("an endpoint needs a secret to sign with")
    at = at.astimezone(UTC)
    try:
        signatures = [Webhook(secret).sign(event_id, at, body) for secret in endpoint_secrets]
    except ValueError as exc:  # not base64 after the prefix
        raise InvalidSecret(f"not a webhook secret: {exc}") from None
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": " ".join(signatures),
    }
