"""Webhook endpoints: a merchant registers, changes, pauses, deletes and tests them.

Every use case works within the calling merchant's endpoints: another merchant's endpoint,
like a deleted one, is ``NotFound``. A secret is returned only when it is made (on create
and on rotation); it is never read back.

Delete is soft: the endpoint is disabled with the reason ``deleted`` and hidden, and its
pending deliveries become ``dead`` (``last_error`` "endpoint deleted"), so none is sent
afterwards while the delivery history that references the endpoint stays intact.

Each change is appended to the audit log, by ``actor``, in the transaction that makes it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from depositd.clock import utcnow
from depositd.config import DeliveryConfig
from depositd.db.engine import Database
from depositd.db.repositories import Endpoint
from depositd.db.transient import retry_transient
from depositd.db.uow import UnitOfWork
from depositd.delivery.signing import new_secret
from depositd.delivery.ssrf import check_url
from depositd.domain.audit import AuditEntry
from depositd.domain.events import EVENT_TYPES, endpoint_event
from depositd.errors import Conflict, InputError, NotFound
from depositd.ids import new_id

#: most fallback URLs an endpoint may list
MAX_FALLBACK_URLS = 5
#: longest URL stored (``endpoints.url``), after normalising, which may lengthen it
MAX_URL_LENGTH = 2000
#: subscribes to every event type
ALL_EVENTS = "*"
DISABLED_BY_MERCHANT = "disabled by the merchant"
TEST_MESSAGE = "A test event from depositd: this endpoint receives its webhooks."


class UnknownEventType(InputError):
    slug = "unknown-event-type"


class InvalidEndpoint(InputError):
    slug = "invalid-endpoint"


class EndpointDisabled(Conflict):
    slug = "endpoint-disabled"


@dataclass(frozen=True)
class EndpointWithSecret:
    """An endpoint just created or rotated, with the secret it now signs with (shown once)."""

    endpoint: Endpoint
    secret: str


@dataclass(frozen=True)
class QueuedTest:
    event_id: str
    seq: int


async def create_endpoint(
    db: Database,
    policy: DeliveryConfig,
    merchant_id: str,
    url: str,
    *,
    fallback_urls: Sequence[str] = (),
    event_types: Sequence[str] = (ALL_EVENTS,),
    description: str = "",
    actor: str,
    clock: Callable[[], datetime] = utcnow,
) -> EndpointWithSecret:
    """Register an endpoint for the merchant's events; its secret is in the answer only."""
    url, fallbacks = _checked_urls(policy, url, fallback_urls)
    subscriptions = _subscriptions(event_types)
    endpoint_id, secret = new_id("end"), new_secret()
    async with UnitOfWork(db, write=True) as uow:
        now = clock()
        await uow.endpoints.add(
            endpoint_id,
            merchant_id,
            url,
            subscriptions,
            now,
            fallback_urls=fallbacks,
            description=description,
            secret=secret,
        )
        endpoint = await uow.endpoints.get(merchant_id, endpoint_id)
        details = {
            "url": _without_query(url),
            "fallback_urls": [_without_query(u) for u in fallbacks],
            "event_types": subscriptions,
        }
        await _audit(uow, actor, "endpoint.created", merchant_id, endpoint_id, now, details)
        await uow.commit()
    assert endpoint is not None
    return EndpointWithSecret(endpoint, secret)


async def list_endpoints(db: Database, merchant_id: str) -> list[Endpoint]:
    async with UnitOfWork(db, write=False) as uow:
        return await uow.endpoints.of_merchant(merchant_id)


async def get_endpoint(db: Database, merchant_id: str, endpoint_id: str) -> Endpoint:
    async with UnitOfWork(db, write=False) as uow:
        return _found(await uow.endpoints.get(merchant_id, endpoint_id), endpoint_id)


async def update_endpoint(
    db: Database,
    policy: DeliveryConfig,
    merchant_id: str,
    endpoint_id: str,
    *,
    url: str | None = None,
    fallback_urls: Sequence[str] | None = None,
    event_types: Sequence[str] | None = None,
    description: str | None = None,
    actor: str,
    clock: Callable[[], datetime] = utcnow,
) -> Endpoint:
    """Change the fields given (None: keep); ``event_types`` replaces the subscriptions."""
    subscriptions = None if event_types is None else _subscriptions(event_types)
    async with UnitOfWork(db, write=True) as uow:
        current = _found(await uow.endpoints.get(merchant_id, endpoint_id, lock=True), endpoint_id)
        if url is None and fallback_urls is None and subscriptions is None and description is None:
            return current
        # only the URLs sent are checked: an endpoint kept through a policy change can still
        # have its description or event types changed
        new_url = None if url is None else _checked_url(policy, url)
        new_fallbacks = None if fallback_urls is None else _checked_fallbacks(policy, fallback_urls)
        _require_distinct(
            current.url if new_url is None else new_url,
            current.fallback_urls if new_fallbacks is None else new_fallbacks,
        )
        now = clock()
        await uow.endpoints.update(
            merchant_id,
            endpoint_id,
            now,
            url=new_url,
            fallback_urls=new_fallbacks,
            description=description,
        )
        if subscriptions is not None:
            await uow.endpoints.set_event_types(endpoint_id, subscriptions)
        endpoint = await uow.endpoints.get(merchant_id, endpoint_id)
        changed: dict[str, Any] = {}
        if new_url is not None:
            changed["url"] = _without_query(new_url)
        if new_fallbacks is not None:
            changed["fallback_urls"] = [_without_query(u) for u in new_fallbacks]
        if subscriptions is not None:
            changed["event_types"] = subscriptions
        if description is not None:
            changed["description"] = description
        await _audit(uow, actor, "endpoint.updated", merchant_id, endpoint_id, now, changed)
        await uow.commit()
    return _found(endpoint, endpoint_id)


async def delete_endpoint(
    db: Database,
    merchant_id: str,
    endpoint_id: str,
    *,
    actor: str,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    """Delete the endpoint (soft, see the module docstring): nothing more is sent to it."""

    async def delete() -> bool:
        async with UnitOfWork(db, write=True) as uow:
            now = clock()
            if not await uow.endpoints.delete(merchant_id, endpoint_id, now):
                return False
            await _audit(uow, actor, "endpoint.deleted", merchant_id, endpoint_id, now)
            await uow.commit()
        return True

    if not await retry_transient(delete):
        raise NotFound(f"no endpoint {endpoint_id}")


async def disable_endpoint(
    db: Database,
    merchant_id: str,
    endpoint_id: str,
    *,
    actor: str,
    clock: Callable[[], datetime] = utcnow,
) -> Endpoint:
    """Stop sending to the endpoint; events meanwhile are not queued for it.

    Deliveries already queued wait, and go out once it is enabled again. An endpoint that is
    already disabled (say, after sustained failure) keeps the reason it was disabled for
    (and nothing is audited: nothing changed).
    """
    async with UnitOfWork(db, write=True) as uow:
        now = clock()
        disabled = await uow.endpoints.disable(merchant_id, endpoint_id, DISABLED_BY_MERCHANT, now)
        endpoint = _found(await uow.endpoints.get(merchant_id, endpoint_id), endpoint_id)
        if disabled:
            await _audit(uow, actor, "endpoint.disabled", merchant_id, endpoint_id, now)
        await uow.commit()
    return endpoint


async def enable_endpoint(
    db: Database,
    merchant_id: str,
    endpoint_id: str,
    *,
    actor: str,
    clock: Callable[[], datetime] = utcnow,
) -> Endpoint:
    """Send to the endpoint again, starting afresh: no failure streak, circuit closed."""
    async with UnitOfWork(db, write=True) as uow:
        now = clock()
        before = _found(await uow.endpoints.get(merchant_id, endpoint_id, lock=True), endpoint_id)
        await uow.endpoints.enable(merchant_id, endpoint_id, now)
        endpoint = await uow.endpoints.get(merchant_id, endpoint_id)
        details = {"was_disabled": before.disabled_reason}
        await _audit(uow, actor, "endpoint.enabled", merchant_id, endpoint_id, now, details)
        await uow.commit()
    return _found(endpoint, endpoint_id)


async def rotate_secret(
    db: Database,
    merchant_id: str,
    endpoint_id: str,
    grace: timedelta,
    *,
    actor: str,
    clock: Callable[[], datetime] = utcnow,
) -> EndpointWithSecret:
    """Give the endpoint a new secret; the old one keeps signing beside it for ``grace``.

    A zero grace retires the old secret at once. Rotating again within the grace retires
    the secret before the last one: only the two newest ever sign.
    """
    if grace < timedelta(0):
        raise InvalidEndpoint("the grace period cannot be negative")
    secret = new_secret()
    async with UnitOfWork(db, write=True) as uow:
        now = clock()
        until = now + grace if grace > timedelta(0) else None
        await uow.endpoints.rotate_secret(merchant_id, endpoint_id, secret, until, now)
        endpoint = _found(await uow.endpoints.get(merchant_id, endpoint_id), endpoint_id)
        details = {"grace_seconds": int(grace.total_seconds())}
        await _audit(uow, actor, "endpoint.secret_rotated", merchant_id, endpoint_id, now, details)
        await uow.commit()
    return EndpointWithSecret(endpoint, secret)


async def send_test_event(
    db: Database, merchant_id: str, endpoint_id: str, *, clock: Callable[[], datetime] = utcnow
) -> QueuedTest:
    """Queue an ``endpoint.test`` event for this endpoint alone (``EndpointDisabled`` if off).

    The event is in the merchant's event log like any other, but it is delivered only to
    the endpoint under test, whatever the other endpoints subscribe to.
    """

    async def queue() -> QueuedTest:
        async with UnitOfWork(db, write=True) as uow:
            endpoint = _found(await uow.endpoints.get(merchant_id, endpoint_id), endpoint_id)
            if endpoint.disabled_at is not None:
                raise EndpointDisabled(
                    f"endpoint {endpoint_id} is disabled ({endpoint.disabled_reason});"
                    " enable it to send it a test event"
                )
            now = clock()
            event = endpoint_event(
                new_id("evt"), "test", merchant_id, endpoint_id, now, message=TEST_MESSAGE
            )
            seq = await uow.endpoints.queue_test_event(endpoint_id, event, now)
            await uow.commit()
        return QueuedTest(event.id, seq)

    return await retry_transient(queue)


async def _audit(
    uow: UnitOfWork,
    actor: str,
    action: str,
    merchant_id: str,
    endpoint_id: str,
    now: datetime,
    details: dict[str, Any] | None = None,
) -> None:
    await uow.audit.append(AuditEntry(actor, action, endpoint_id, merchant_id, details or {}), now)


def _without_query(url: str) -> str:
    """The URL as the audit log keeps it: a query string may carry the receiver's token."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _found(endpoint: Endpoint | None, endpoint_id: str) -> Endpoint:
    if endpoint is None:
        raise NotFound(f"no endpoint {endpoint_id}")
    return endpoint


def _checked_urls(
    policy: DeliveryConfig, url: str, fallback_urls: Sequence[str]
) -> tuple[str, list[str]]:
    """The primary and fallback URLs normalised, each allowed by the delivery policy."""
    primary, fallbacks = _checked_url(policy, url), _checked_fallbacks(policy, fallback_urls)
    _require_distinct(primary, fallbacks)
    return primary, fallbacks


def _checked_fallbacks(policy: DeliveryConfig, fallback_urls: Sequence[str]) -> list[str]:
    if len(fallback_urls) > MAX_FALLBACK_URLS:
        raise InvalidEndpoint(f"an endpoint lists at most {MAX_FALLBACK_URLS} fallback URLs")
    return [_checked_url(policy, fallback) for fallback in fallback_urls]


def _require_distinct(url: str, fallback_urls: Sequence[str]) -> None:
    seen = {url}
    for fallback in fallback_urls:
        if fallback in seen:
            raise InvalidEndpoint(f"{fallback} is listed twice (as the URL or a fallback)")
        seen.add(fallback)


def _checked_url(policy: DeliveryConfig, url: str) -> str:
    checked = check_url(url, policy)  # UnsafeUrl, saying why
    if len(checked) > MAX_URL_LENGTH:
        raise InvalidEndpoint(f"a URL is at most {MAX_URL_LENGTH} characters long, encoded")
    return checked


def _subscriptions(event_types: Sequence[str]) -> list[str]:
    """The event types to subscribe to, checked; ``*`` alone when it is among them."""
    if not event_types:
        raise UnknownEventType("list at least one event type, or '*' for all of them")
    unknown = sorted({t for t in event_types if t != ALL_EVENTS and t not in EVENT_TYPES})
    if unknown:
        raise UnknownEventType(
            f"unknown event type {', '.join(map(repr, unknown))};"
            f" use '*' or any of {', '.join(EVENT_TYPES)}"
        )
    if ALL_EVENTS in event_types:
        return [ALL_EVENTS]
    return sorted(set(event_types))
