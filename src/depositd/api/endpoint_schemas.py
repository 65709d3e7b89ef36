"""The JSON shapes of the webhook endpoints API (and their OpenAPI documentation)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from depositd.db.repositories import Endpoint
from depositd.domain.events import EVENT_TYPES
from depositd.services.endpoints import ALL_EVENTS, MAX_FALLBACK_URLS, MAX_URL_LENGTH

EVENT_TYPES_HELP = f"'{ALL_EVENTS}' for every type, or any of {', '.join(EVENT_TYPES)}"
#: longest grace a rotation may give the old secret (as the ``rotation_grace_hours`` setting)
MAX_GRACE_HOURS = 24 * 30


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EndpointIn(_In):
    url: StrictStr = Field(
        min_length=1, max_length=MAX_URL_LENGTH, description="where events are POSTed (https)"
    )
    fallback_urls: list[StrictStr] = Field(
        [],
        max_length=MAX_FALLBACK_URLS,
        description="tried in order when the URL fails",
    )
    event_types: list[StrictStr] = Field(
        [ALL_EVENTS], min_length=1, max_length=len(EVENT_TYPES) + 1, description=EVENT_TYPES_HELP
    )
    description: StrictStr = Field("", max_length=500)


class EndpointPatch(_In):
    """Only the fields given change (null: unchanged); ``event_types`` replaces the list."""

    url: StrictStr | None = Field(None, min_length=1, max_length=MAX_URL_LENGTH)
    fallback_urls: list[StrictStr] | None = Field(None, max_length=MAX_FALLBACK_URLS)
    event_types: list[StrictStr] | None = Field(
        None, min_length=1, max_length=len(EVENT_TYPES) + 1, description=EVENT_TYPES_HELP
    )
    description: StrictStr | None = Field(None, max_length=500)


class RotateIn(_In):
    grace_hours: float | None = Field(
        None,
        ge=0,
        le=MAX_GRACE_HOURS,
        description="how long the old secret keeps signing beside the new one;"
        " 0 retires it now; leave out for the configured grace",
    )


class HealthOut(BaseModel):
    #: consecutive failed attempts
    failure_streak: int
    #: when the current run of failures began
    failing_since: datetime | None
    #: no attempts before this time (circuit breaker)
    circuit_open_until: datetime | None


class EndpointOut(BaseModel):
    id: str
    url: str
    fallback_urls: list[str]
    event_types: list[str]
    description: str
    created_at: datetime
    updated_at: datetime
    disabled: bool
    disabled_at: datetime | None
    #: "disabled by the merchant", or why delivery gave up on it
    disabled_reason: str | None
    #: the secret before the last rotation signs beside the current one until then
    previous_secret_until: datetime | None
    health: HealthOut

    @classmethod
    def of(cls, endpoint: Endpoint, now: datetime) -> EndpointOut:
        until = endpoint.previous_secret_until
        return cls(
            id=endpoint.id,
            url=endpoint.url,
            fallback_urls=list(endpoint.fallback_urls),
            event_types=list(endpoint.event_types),
            description=endpoint.description,
            created_at=endpoint.created_at,
            updated_at=endpoint.updated_at,
            disabled=endpoint.disabled_at is not None,
            disabled_at=endpoint.disabled_at,
            disabled_reason=endpoint.disabled_reason,
            previous_secret_until=until if until is not None and until > now else None,
            health=HealthOut(
                failure_streak=endpoint.failure_streak,
                failing_since=endpoint.failing_since,
                circuit_open_until=endpoint.circuit_open_until,
            ),
        )


class EndpointWithSecretOut(EndpointOut):
    #: ``whsec_`` + base64; shown only now, keep it safe
    secret: str


class EndpointList(BaseModel):
    data: list[EndpointOut]


class QueuedTestOut(BaseModel):
    """The test event, queued for the endpoint alone."""

    event_id: str
    seq: int
