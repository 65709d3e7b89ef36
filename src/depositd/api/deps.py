"""Request dependencies: the application context, the calling merchant (and the key it used),
the reader's language."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Header, Query, Request

from depositd.api.problems import Problem, unauthorized
from depositd.api.throttle import Throttle, retry_after
from depositd.config import DeliveryConfig
from depositd.db.end_users import Account
from depositd.db.engine import Database
from depositd.domain.assets import AssetBook
from depositd.domain.messages import LANGUAGES, negotiate_language
from depositd.providers.payments import PaymentGateways
from depositd.services.alert_source import AlertSource, NoAlerts
from depositd.services.callbacks import (
    CallbackLog,
    ClaimVerifier,
    IpNetwork,
    Provider,
    client_address,
)
from depositd.services.end_users import EndUsers
from depositd.services.group_commit import Recorder
from depositd.services.kyc import Kyc
from depositd.services.merchants import KeyHolder, authenticate
from depositd.services.status_links import StatusLinks


@dataclass(frozen=True)
class AppContext:
    db: Database
    assets: AssetBook
    #: configured chain names
    chains: frozenset[str]
    recorder: Recorder
    #: each configured chain's EIP-155 chain id, by name (payment URIs carry it)
    chain_ids: Mapping[str, int]
    #: outbound webhook policy (which endpoint URLs are allowed, secret rotation grace)
    delivery: DeliveryConfig
    #: where inbound callbacks are stored, in group commits of this process's requests
    callbacks: CallbackLog
    #: end users' own accounts, and their KYC submissions
    end_users: EndUsers
    kyc: Kyc
    #: requests to /v1/auth/* per source address
    auth_throttle: Throttle
    #: upstream providers that post deposit callbacks, by name
    providers: Mapping[str, Provider] = field(default_factory=dict)
    #: record an accepted callback's claim right after acknowledging it (else: the sweep)
    process_callbacks_inline: bool = True
    #: reverse proxies whose X-Forwarded-For names the real source
    trusted_proxies: tuple[IpNetwork, ...] = ()
    #: the request body limit (inbound callbacks: of an unknown provider)
    max_body_bytes: int = 65536
    #: our nodes, to check providers' claims on chains we watch (None: claims are believed)
    verifier: ClaimVerifier | None = None
    #: payment providers that start card and bank transfer payments
    payments: PaymentGateways = field(default_factory=lambda: PaymentGateways({}))
    #: signs dashboard sessions and order status page links; None: both are off
    status_links: StatusLinks | None = None
    #: the alerts the dashboard shows as active
    alerts: AlertSource = field(default_factory=NoAlerts)


async def context(request: Request) -> AppContext:
    # async: a plain function dependency would run in a worker thread, a hop per request
    ctx: AppContext = request.app.state.ctx
    return ctx


Context = Annotated[AppContext, Depends(context)]


async def key_holder(
    ctx: Context, authorization: Annotated[str | None, Header()] = None
) -> KeyHolder:
    """The merchant whose API key authorises this request, and the key (audited actions
    name it as their actor)."""
    secret = bearer_token(authorization)
    if secret is None:
        raise unauthorized("send 'Authorization: Bearer <api key>'")
    holder = await authenticate(ctx.db, secret)
    if holder is None:
        raise unauthorized("the API key is unknown or revoked")
    return holder


Caller = Annotated[KeyHolder, Depends(key_holder)]


async def merchant(holder: Caller) -> str:
    """The merchant whose API key authorises this request."""
    return holder.merchant_id


MerchantId = Annotated[str, Depends(merchant)]


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if authorization is None:
        return None
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return None
    return secret.strip()


async def end_user(ctx: Context, authorization: Annotated[str | None, Header()] = None) -> Account:
    """The end user whose session token authorises this request."""
    token = bearer_token(authorization)
    if token is None:
        raise unauthorized("send 'Authorization: Bearer <session token>' from /v1/auth/login")
    account = await ctx.end_users.authenticate(token)
    if account is None:
        raise unauthorized("the session token is unknown, expired or logged out")
    return account


EndUser = Annotated[Account, Depends(end_user)]


async def throttled(request: Request, ctx: Context) -> None:
    """Count the request against its source address's auth rate limit (429 beyond it)."""
    peer = request.client.host if request.client else "unknown"
    headers = {"x-forwarded-for": request.headers.get("x-forwarded-for", "")}
    wait = ctx.auth_throttle.allow(client_address(peer, headers, ctx.trusted_proxies))
    if wait is not None:
        raise Problem(
            429,
            "too-many-requests",
            "Too many requests",
            f"at most {ctx.auth_throttle.per_minute} a minute from one address; try again later",
            headers={"Retry-After": retry_after(wait)},
        )


async def language(
    accept_language: Annotated[str | None, Header()] = None,
    lang: Annotated[str | None, Query(description=f"one of {', '.join(LANGUAGES)}")] = None,
) -> str:
    """Language for hints: ``?lang=`` wins over ``Accept-Language``."""
    if lang is not None:
        return negotiate_language(lang)
    return negotiate_language(accept_language)


Language = Annotated[str, Depends(language)]
