"""Inbound provider callbacks: check, store before anything else, then record through the engine.

A request to ``/v1/callbacks/<provider>`` is stored, whatever it is, before it is answered:
rejected ones with the reason (for audit; they change nothing), accepted ones with what they
claim. Only once that row is committed does the provider get its acknowledgement, so an
acknowledged callback is never lost. Recording the claim comes after, through the same entry
point as every other source (``Recorder``): right away in the process that received it, and
by the workers' sweep for any that a crash or an outage left behind. Recording is idempotent
on the provider's deposit id, and an event id accepted before is stored as a replay of it and
answered the same, so a provider retrying or replaying never causes a second effect.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial

import structlog

from depositd import metrics
from depositd.chain.claims import ChainEvidence, look_up_claim
from depositd.chain.rpc import EvmRpc
from depositd.clock import utcnow
from depositd.config import AckConfig, Config, PayloadMapping
from depositd.db.callbacks import (
    Outcome,
    Received,
    ToStore,
    Unprocessed,
    mark_processed,
    store_callbacks,
)
from depositd.db.engine import Database
from depositd.db.transient import retry_transient
from depositd.db.uow import UnitOfWork
from depositd.domain.assets import AssetBook
from depositd.domain.deposits import Observation, ProviderStatus, ToUser
from depositd.domain.messages import Message
from depositd.errors import InputError
from depositd.ids import new_id
from depositd.providers.mapping import PayloadRejected, ProviderClaim, read_claim
from depositd.providers.schemes import SchemeSettings, SignatureRejected, verify_signature
from depositd.services.group_commit import GroupCommit, Recorder

log = structlog.get_logger("depositd.callbacks")

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: headers never stored with a callback
_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
#: longest provider name kept from a URL
_PROVIDER_CHARS = 60


@dataclass(frozen=True)
class Provider:
    """A configured upstream provider, ready to check its requests."""

    name: str
    merchant_id: str
    signature: SchemeSettings
    #: empty: any source address
    allowed: tuple[IpNetwork, ...]
    max_body_bytes: int
    ack: AckConfig
    mapping: PayloadMapping


def providers_from(config: Config) -> dict[str, Provider]:
    providers = {}
    for name, cfg in config.providers.items():
        providers[name] = Provider(
            name=name,
            merchant_id=cfg.merchant,
            signature=cfg.signature(name),
            allowed=tuple(ipaddress.ip_network(n, strict=False) for n in cfg.allowed_ips),
            max_body_bytes=cfg.max_body_bytes,
            ack=cfg.ack,
            mapping=cfg.mapping,
        )
        if cfg.scheme.weak:
            log.warning(
                "provider signs callbacks with a weak scheme (MD5); prefer an HMAC scheme",
                provider=name,
                scheme=cfg.scheme.value,
            )
    return providers


class CallbackRejected(InputError):
    """A callback we stored but will not act on; ``code`` is stable, ``status`` the answer."""

    def __init__(self, status: int, code: str, reason: str, callback_id: str) -> None:
        super().__init__(reason)
        self.status, self.code, self.callback_id = status, code, callback_id


@dataclass(frozen=True)
class Acknowledged:
    """A callback stored as accepted (or as a replay of one): answer with ``ack``."""

    callback_id: str
    provider: Provider
    #: the accepted callback this one repeats, or None
    replay_of: str | None
    #: what to process (a callback just accepted; None for a replay)
    accepted: Unprocessed | None

    @property
    def ack(self) -> AckConfig:
        return self.provider.ack


@dataclass(frozen=True)
class Request:
    """A callback request as the API layer saw it."""

    provider: str
    source_ip: str
    #: lower-case names
    headers: Mapping[str, str]
    #: the body, or its first bytes when it was larger than allowed
    body: bytes
    #: how large the body was (or said it was)
    body_bytes: int


class CallbackLog:
    """Where this process writes callbacks: each one stored, and each processing outcome, in
    group commits that concurrent requests share (one transaction for many callbacks)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._stores: GroupCommit[ToStore, str | None] = GroupCommit(partial(store_callbacks, db))
        self._marks: GroupCommit[Outcome, None] = GroupCommit(partial(mark_processed, db))

    async def store(self, item: ToStore) -> str | None:
        """Store one callback; the accepted callback it repeats, if it does."""
        return await self._stores.submit(item)

    async def mark_processed(
        self, callback_id: str, deposit_id: str | None, result: str, now: datetime
    ) -> None:
        await self._marks.submit((callback_id, deposit_id, result, now))


async def receive_callback(
    callbacks: CallbackLog,
    providers: Mapping[str, Provider],
    assets: AssetBook,
    request: Request,
    *,
    clock: Callable[[], datetime] = utcnow,
) -> Acknowledged:
    """Check ``request``, store it, and say how to answer; raises ``CallbackRejected``
    (after storing the request) when it must not be acted on."""
    now = clock()
    provider = providers.get(request.provider)
    received = Received(
        id=new_id("cbk"),
        provider=request.provider[:_PROVIDER_CHARS],
        merchant_id=provider.merchant_id if provider is not None else None,
        received_at=now,
        source_ip=request.source_ip,
        headers={k: v for k, v in request.headers.items() if k not in _CREDENTIAL_HEADERS},
        body=request.body,
        body_bytes=request.body_bytes,
    )
    try:
        if provider is None:
            raise _Refusal(404, "unknown_provider", f"no provider {request.provider!r}")
        claim = _check(provider, assets, request, now)
    except _Refusal as refusal:
        await callbacks.store(
            ToStore(received, rejection_code=refusal.code, rejection=refusal.reason)
        )
        log.warning(
            "callback rejected",
            provider=received.provider,
            callback_id=received.id,
            code=refusal.code,
            reason=refusal.reason,
            source_ip=request.source_ip,
        )
        named = received.provider if provider is not None else "unknown"
        metrics.CALLBACKS.labels(named, "rejected").inc()
        metrics.CALLBACK_REJECTIONS.labels(named, refusal.code).inc()
        raise CallbackRejected(refusal.status, refusal.code, refusal.reason, received.id) from None
    replay_of = await callbacks.store(ToStore(received, claim.event_id, claim.as_dict()))
    metrics.CALLBACKS.labels(provider.name, "accepted" if replay_of is None else "replayed").inc()
    if replay_of is not None:
        log.info(
            "callback replayed",
            provider=provider.name,
            callback_id=received.id,
            replay_of=replay_of,
            event_id=claim.event_id,
        )
        return Acknowledged(received.id, provider, replay_of, None)
    accepted = Unprocessed(received.id, provider.name, provider.merchant_id, claim.as_dict(), 0)
    return Acknowledged(received.id, provider, None, accepted)


class _Refusal(Exception):
    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.code, self.reason = status, code, reason


def _check(provider: Provider, assets: AssetBook, request: Request, now: datetime) -> ProviderClaim:
    if provider.allowed and not address_within(request.source_ip, provider.allowed):
        raise _Refusal(
            403, "source_ip_not_allowed", f"{request.source_ip} is not an allowed source address"
        )
    if request.body_bytes > provider.max_body_bytes:
        raise _Refusal(
            413,
            "body_too_large",
            f"the body has {request.body_bytes} bytes, more than the {provider.max_body_bytes}"
            " allowed",
        )
    try:
        verified = verify_signature(
            provider.signature, request.headers, request.body, now.timestamp()
        )
    except SignatureRejected as exc:
        status = 400 if exc.code == "body_not_json" else 401
        raise _Refusal(status, exc.code, str(exc)) from None
    try:
        body = json.loads(request.body, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError):
        raise _Refusal(400, "malformed_json", "the body is not valid JSON") from None
    try:
        return read_claim(provider.mapping, assets, body, verified.message_id)
    except PayloadRejected as exc:
        raise _Refusal(422, exc.code, str(exc)) from None


def address_within(address: str, networks: Sequence[IpNetwork]) -> bool:
    """Whether ``address`` (text, maybe not an address at all) is in one of ``networks``."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(peer: str, headers: dict[str, str], trusted: Sequence[IpNetwork]) -> str:
    """The request's source: the peer, or behind trusted proxies the last address in
    ``X-Forwarded-For`` that is not one of them."""
    if not trusted or not address_within(peer, trusted):
        return peer
    forwarded = [hop.strip() for hop in headers.get("x-forwarded-for", "").split(",")]
    for hop in reversed(forwarded):
        if hop and not address_within(hop, trusted):
            return hop
    return peer


@dataclass(frozen=True)
class Processed:
    callback_id: str
    deposit_id: str | None
    #: the deposit's status after recording, ``unchanged``, or why it could not be recorded
    result: str


class ClaimVerifier:
    """Our own node for each watched chain, to check what providers claim happened there."""

    def __init__(self, config: Config, assets: AssetBook) -> None:
        self._assets = assets
        self._nodes = {
            name: EvmRpc(chain.rpc_url, timeout_seconds=chain.rpc_timeout_seconds)
            for name, chain in config.chains.items()
            if chain.rpc_url is not None
        }

    def watches(self, asset: str) -> bool:
        return self._assets[asset].chain in self._nodes

    def chain_of(self, claim: ProviderClaim) -> str:
        chain = self._assets[claim.asset].chain
        assert chain is not None, "asked only of assets on a chain it watches"
        return chain

    def required_confirmations(self, claim: ProviderClaim) -> int:
        return self._assets[claim.asset].required_confirmations(claim.amount)

    async def evidence(self, claim: ProviderClaim, recipient: str) -> ChainEvidence:
        asset = self._assets[claim.asset]
        assert claim.tx_hash is not None
        node = self._nodes[self.chain_of(claim)]
        return await look_up_claim(node, asset, claim.tx_hash, recipient, claim.amount)

    async def close(self) -> None:
        for node in self._nodes.values():
            await node.close()


async def process_callbacks(
    callbacks: CallbackLog,
    recorder: Recorder,
    *,
    verifier: ClaimVerifier | None = None,
    older_than: timedelta = timedelta(0),
    limit: int = 500,
    clock: Callable[[], datetime] = utcnow,
) -> list[Processed]:
    """Record the claims of the accepted callbacks received more than ``older_than`` ago and
    not yet processed (``process_accepted``).
    """
    async with UnitOfWork(callbacks.db, write=False) as uow:
        queued = await uow.callbacks.unprocessed(clock() - older_than, limit)
    return await process_accepted(callbacks, recorder, queued, verifier=verifier, clock=clock)


async def process_accepted(
    callbacks: CallbackLog,
    recorder: Recorder,
    accepted: Sequence[Unprocessed],
    *,
    verifier: ClaimVerifier | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> list[Processed]:
    """Record the claims of accepted callbacks, each through the engine (concurrently: they
    share its group commits), and mark them processed.

    With a ``verifier``, a claim that a deposit on a chain we watch succeeded is checked
    against our node first (``verify``). A claim the engine refuses (an unknown user, an
    amount that contradicts the deposit) is marked processed with the reason: retrying cannot
    change it. A database failure, an unreachable node or too few confirmations leave the
    callback queued for the next sweep.
    """
    outcomes = await asyncio.gather(
        *(_process(callbacks, recorder, verifier, callback, clock) for callback in accepted)
    )
    return [outcome for outcome in outcomes if outcome is not None]


@dataclass(frozen=True)
class Settlement:
    """What recording one claim did."""

    deposit_id: str | None
    #: the deposit's status after recording, ``unchanged``, or the slug of why it could not
    #: be recorded (an unknown user, a conflicting amount)
    result: str
    #: False while the claim cannot be settled yet (our node shows too few confirmations)
    final: bool = True
    #: its callback was marked processed in the transaction that recorded it
    marked: bool = False


async def settle_claim(
    db: Database,
    recorder: Recorder,
    verifier: ClaimVerifier | None,
    claim: ProviderClaim,
    merchant_id: str,
    provider: str,
    *,
    callback_id: str | None = None,
) -> Settlement:
    """Record what ``claim`` says through the engine (after checking a claimed credit on a
    chain we watch against our node); a final settlement of the stored callback
    ``callback_id`` marks it processed in the same transaction. Database and node failures
    propagate."""
    observation = claim.observation(merchant_id, provider)
    final = True
    try:
        credits = claim.status is ProviderStatus.SUCCEEDED
        if credits and verifier is not None and verifier.watches(claim.asset):
            observation, final = await verify(db, verifier, claim, observation)
        recorded = await recorder.record(observation, callback_id=callback_id if final else None)
    except InputError as exc:
        log.warning("claim not recorded", provider=provider, deposit=claim.deposit_id,
                    reason=str(exc))  # fmt: skip
        return Settlement(None, exc.slug)
    deposit = recorded.deposit
    deposit_id = deposit.id if deposit is not None else None
    if not final:
        return Settlement(deposit_id, f"{observation.confirmations} confirmations", final=False)
    return Settlement(deposit_id, recorded.outcome, marked=callback_id is not None)


async def _process(
    callbacks: CallbackLog,
    recorder: Recorder,
    verifier: ClaimVerifier | None,
    callback: Unprocessed,
    clock: Callable[[], datetime],
) -> Processed | None:
    claim = ProviderClaim.from_dict(callback.claim)
    try:
        settled = await settle_claim(
            callbacks.db,
            recorder,
            verifier,
            claim,
            callback.merchant_id,
            callback.provider,
            callback_id=callback.id,
        )
    except Exception as exc:  # the database or the node, mostly: the sweep tries again
        log.warning(
            "callback processing failed; the sweep will try again",
            callback_id=callback.id,
            error=f"{type(exc).__name__}: {exc}",
        )
        await _mark_failed(callbacks.db, callback.id, f"{type(exc).__name__}: {exc}")
        return None
    if not settled.final:
        await _mark_failed(callbacks.db, callback.id, f"our node shows {settled.result} so far")
        return None
    if not settled.marked:  # a claim the engine refused: marked on its own
        await callbacks.mark_processed(callback.id, settled.deposit_id, settled.result, clock())
    return Processed(callback.id, settled.deposit_id, settled.result)


async def verify(
    db: Database, verifier: ClaimVerifier, claim: ProviderClaim, observation: Observation
) -> tuple[Observation, bool]:
    """The observation to record for a claimed credit on a chain we watch, and whether the
    claim is settled: held when our node contradicts it (or cannot be asked about it), still
    confirming while our node shows fewer confirmations than the asset needs."""
    recipient = claim.address or await _address_of(db, observation, verifier.chain_of(claim))
    if claim.tx_hash is None or recipient is None:
        return replace(observation, hold=Message("held_claim_unverifiable")), True
    evidence = await verifier.evidence(claim, recipient)
    if evidence.contradiction is not None:
        return replace(observation, hold=evidence.contradiction), True
    if evidence.confirmations < verifier.required_confirmations(claim):
        confirming = replace(
            observation,
            provider_status=ProviderStatus.CONFIRMING,
            confirmations=evidence.confirmations,
        )
        return confirming, False
    return observation, True


async def _address_of(db: Database, observation: Observation, chain: str) -> str | None:
    """The user's deposit address on ``chain``, if they have one here."""
    assert isinstance(observation.owner, ToUser)
    async with UnitOfWork(db, write=False) as uow:
        user = await uow.users.get(observation.owner.merchant_id, observation.owner.external_id)
        if user is None:
            return None
        for address in await uow.users.addresses_of(user.id):
            if address.chain == chain:
                return str(address.address)
    return None


async def _mark_failed(db: Database, callback_id: str, error: str) -> None:
    async def mark() -> None:
        async with UnitOfWork(db, write=True) as uow:
            await uow.callbacks.mark_failed(callback_id, error)
            await uow.commit()

    try:
        await retry_transient(mark)
    except Exception as exc:  # the database is down: the callback simply stays queued
        log.warning("could not count a failed callback attempt", error=type(exc).__name__)
