"""The deposit state machine: what an observation does to a deposit, decided without I/O.

Every source (our chain watcher, a provider callback, the merchant API) reports what it saw as
an ``Observation``. ``decide`` compares it with what we already know and returns the one
``Transition`` to make, or None when the observation tells us nothing new — that is what makes
recording idempotent under duplicates, replays and out-of-order delivery.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from depositd.domain.assets import Asset
from depositd.domain.messages import Message, payment_failure
from depositd.domain.money import format_amount
from depositd.errors import IllegalTransition, InputError, ObservationConflict


class DepositStatus(StrEnum):
    #: seen, no confirmation yet: in the mempool, in the newest block (nothing mined on top
    #: of it yet), or a provider says it is on its way
    PENDING = "pending"
    #: in a block with blocks mined on top, fewer than the asset requires
    CONFIRMING = "confirming"
    #: final enough: the ledger holds its credit
    CREDITED = "credited"
    #: confirmed but stopped by policy, anomaly or KYC limit until a reviewer decides
    HELD = "held"
    #: will never be credited: below minimum, unknown token, failed or fake transfer
    REJECTED = "rejected"
    #: its block left the canonical chain before it was credited
    ORPHANED = "orphaned"
    #: credited, then removed by a deep reorg or reversed by the provider; credit taken back
    REVERSED = "reversed"
    #: the provider reports that the payment failed
    FAILED = "failed"


S = DepositStatus

#: Allowed status changes. ``None`` is a deposit seen for the first time. ORPHANED and REVERSED
#: deposits may come back when their transaction is mined again in the new canonical chain;
#: CONFIRMING -> CONFIRMING is progress (more confirmations) and also makes an event. A pending
#: or confirming deposit whose transaction a reorg moved into the new newest block is PENDING
#: again, in that block.
TRANSITIONS: Mapping[DepositStatus | None, frozenset[DepositStatus]] = {
    None: frozenset({S.PENDING, S.CONFIRMING, S.CREDITED, S.HELD, S.REJECTED, S.FAILED}),
    S.PENDING: frozenset(
        {S.PENDING, S.CONFIRMING, S.CREDITED, S.HELD, S.REJECTED, S.FAILED, S.ORPHANED}
    ),
    S.CONFIRMING: frozenset(
        {S.PENDING, S.CONFIRMING, S.CREDITED, S.HELD, S.REJECTED, S.FAILED, S.ORPHANED}
    ),
    S.CREDITED: frozenset({S.REVERSED}),
    S.HELD: frozenset({S.CREDITED, S.REJECTED, S.ORPHANED}),
    S.ORPHANED: frozenset({S.PENDING, S.CONFIRMING, S.CREDITED, S.HELD, S.REJECTED}),
    S.REVERSED: frozenset({S.PENDING, S.CONFIRMING, S.CREDITED, S.HELD}),
    S.REJECTED: frozenset(),
    S.FAILED: frozenset(),
}


class ProviderStatus(StrEnum):
    """What an upstream provider says about a payment it handles."""

    #: accepted, not yet settled
    PENDING = "pending"
    #: on chain, waiting for confirmations
    CONFIRMING = "confirming"
    #: settled: credit it
    SUCCEEDED = "succeeded"
    #: will not settle
    FAILED = "failed"
    #: settled earlier and taken back (chargeback, recall)
    REVERSED = "reversed"


class RejectReason(StrEnum):
    """Why a source already knows a transfer must not be credited (fake-deposit defences)."""

    #: the token contract is not on the allow-list
    TOKEN_NOT_ACCEPTED = "token_not_accepted"  # noqa: S105 - a reason, not a secret
    #: receipt status is 0, or the token's ``transfer`` returned false
    TRANSACTION_FAILED = "transaction_failed"
    #: the Transfer log was not emitted by the token contract itself
    FAKE_TRANSFER = "fake_transfer"
    #: a provider claimed a transfer the chain does not show
    CLAIM_NOT_ON_CHAIN = "claim_not_on_chain"


class Posting(StrEnum):
    """Ledger effect of a transition."""

    #: credit the deposit to the user's available balance
    CREDIT = "credit"
    #: take a credit back (compensating entry)
    REVERSAL = "reversal"


#: log index recorded for native-coin transfers, which have no log
NATIVE_LOG_INDEX = -1


@dataclass(frozen=True)
class ChainRef:
    """Identity of an on-chain deposit: one transfer log (or the native value) of one tx."""

    chain: str
    tx_hash: str
    log_index: int = NATIVE_LOG_INDEX
    #: ``chain:<chain>:<tx, lower case>:<log index>``, the deposit's identity
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # made once: recording a batch asks for it many times per deposit
        key = f"chain:{self.chain}:{self.tx_hash.lower()}:{self.log_index}"
        object.__setattr__(self, "key", key)


@dataclass(frozen=True)
class ProviderRef:
    """Identity of a deposit an upstream provider (or the merchant's own system) reports.

    Scoped by merchant: one merchant's provider ids can never collide with another's.
    """

    merchant_id: str
    provider: str
    deposit_id: str
    #: ``provider:<merchant>:<provider>:<deposit id>``, the deposit's identity
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = f"provider:{self.merchant_id}:{self.provider}:{self.deposit_id}"
        object.__setattr__(self, "key", key)


@dataclass(frozen=True)
class ToUser:
    """The deposit belongs to this user of this merchant (by the merchant's external id)."""

    merchant_id: str
    external_id: str


@dataclass(frozen=True)
class ToAddress:
    """The deposit was sent to one of our deposit addresses."""

    chain: str
    address: str


@dataclass(frozen=True)
class Observation:
    """What one source saw about one deposit at one moment.

    Chain sources give ``confirmations`` — the blocks mined on top of the deposit's block, so
    0 in the mempool (no ``block_hash``) and in the newest block — and ``block_hash``; provider
    sources give ``provider_status``. ``removed`` says a reorg took the block holding it away.
    """

    ref: ChainRef | ProviderRef
    owner: ToUser | ToAddress
    asset: str
    amount: int
    confirmations: int | None = None
    provider_status: ProviderStatus | None = None
    block_number: int | None = None
    block_hash: str | None = None
    removed: bool = False
    rejection: RejectReason | None = None
    #: why the deposit must wait for a reviewer instead of being credited (a claim our node
    #: contradicts, a limit): the credit this observation would make becomes a hold
    hold: Message | None = None
    #: the provider's code for why a payment failed (``insufficient_funds``), if it gave one
    provider_reason: str | None = None

    def __post_init__(self) -> None:
        if self.amount <= 0:
            raise InputError("an observed amount must be positive")
        if isinstance(self.ref, ChainRef):
            if self.confirmations is None or self.confirmations < 0:
                raise InputError("a chain observation needs confirmations >= 0")
            if self.provider_status is not None:
                raise InputError("a chain observation carries no provider status")
        else:
            if self.provider_status is None:
                raise InputError("a provider observation needs a provider status")
            if self.removed:
                raise InputError("a provider reverses a payment with status 'reversed'")
            if self.confirmations is not None and self.confirmations < 0:
                raise InputError("confirmations must be >= 0")

    @property
    def source(self) -> str:
        if isinstance(self.ref, ChainRef):
            return f"chain:{self.ref.chain}"
        return f"provider:{self.ref.provider}"


@dataclass(frozen=True)
class DepositState:
    """What we recorded about a deposit: the part the state machine reasons about."""

    id: str
    ref: ChainRef | ProviderRef
    merchant_id: str
    user_id: str
    user_external_id: str
    asset: str
    amount: int
    status: DepositStatus
    confirmations: int
    required_confirmations: int
    block_hash: str | None
    block_number: int | None
    tx_hash: str | None
    version: int
    #: how many times it has been credited and taken back; keys the next credit's ledger rows
    credit_generation: int
    reason: Message
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Transition:
    """One change to make to a deposit, with its reason and ledger effect."""

    from_status: DepositStatus | None
    to_status: DepositStatus
    confirmations: int
    required_confirmations: int
    reason: Message
    posting: Posting | None
    block_hash: str | None
    block_number: int | None

    def __post_init__(self) -> None:
        check_transition(self.from_status, self.to_status)


def check_transition(from_status: DepositStatus | None, to_status: DepositStatus) -> None:
    """Raise ``IllegalTransition`` unless the state machine allows ``from -> to``."""
    if to_status not in TRANSITIONS[from_status]:
        raise IllegalTransition(f"a deposit cannot go from {from_status} to {to_status}")


def decide(deposit: DepositState | None, obs: Observation, asset: Asset) -> Transition | None:
    """The transition ``obs`` causes on ``deposit`` (None if first seen), or None if nothing."""
    if deposit is not None and (deposit.asset != obs.asset or deposit.amount != obs.amount):
        raise ObservationConflict(
            f"deposit {deposit.id} was recorded as {deposit.amount} {deposit.asset} base units;"
            f" the observation says {obs.amount} {obs.asset}"
        )
    status = deposit.status if deposit else None
    required = (
        deposit.required_confirmations if deposit else asset.required_confirmations(obs.amount)
    )
    if obs.removed:
        return _removal(deposit, obs)
    if status in (S.REJECTED, S.FAILED, S.HELD):
        return None  # final, or waiting for a reviewer
    if status is S.CREDITED:
        if obs.provider_status in (ProviderStatus.REVERSED, ProviderStatus.FAILED):
            return _to(
                deposit,
                S.REVERSED,
                obs,
                _provider_message("provider_reversed", obs),
                Posting.REVERSAL,
            )
        return None
    if deposit is not None and _is_stale(deposit, obs):
        return None
    if obs.rejection is not None:
        if status is S.REVERSED:
            return None  # the credit is already taken back
        return _to(deposit, S.REJECTED, obs, Message(obs.rejection.value), None, required)
    if status is None and obs.amount < asset.min_deposit:
        minimum = format_amount(asset.min_deposit, asset.decimals)
        message = Message("below_minimum", {"minimum": minimum, "symbol": asset.symbol})
        return _to(deposit, S.REJECTED, obs, message, None, required)
    if obs.provider_status is not None:
        transition = _provider_progress(deposit, obs, required)
    else:
        transition = _chain_progress(deposit, obs, asset, required)
    if obs.hold is not None and transition is not None and transition.posting is Posting.CREDIT:
        return _to(deposit, S.HELD, obs, obs.hold, None, required)
    return transition


def review(deposit: DepositState, approve: bool) -> Transition:
    """A reviewer's decision on a held deposit: credit it, or reject it for good."""
    if deposit.status is not S.HELD:
        raise IllegalTransition(f"only a held deposit is reviewed, not a {deposit.status} one")
    if approve:
        reason, to_status, posting = Message("approved_by_reviewer"), S.CREDITED, Posting.CREDIT
    else:
        reason, to_status, posting = Message("rejected_by_reviewer"), S.REJECTED, None
    return Transition(
        from_status=S.HELD,
        to_status=to_status,
        confirmations=deposit.confirmations,
        required_confirmations=deposit.required_confirmations,
        reason=reason,
        posting=posting,
        block_hash=deposit.block_hash,
        block_number=deposit.block_number,
    )


def _removal(deposit: DepositState | None, obs: Observation) -> Transition | None:
    if deposit is None:
        return None  # we never saw it arrive; nothing to undo
    if obs.block_hash is not None and obs.block_hash != deposit.block_hash:
        return None  # a stale removal: the deposit has since moved to another block
    message = Message("removed_by_reorg")
    if deposit.status in (S.PENDING, S.CONFIRMING, S.HELD):
        return _to(deposit, S.ORPHANED, obs, message, None, keep_block=True)
    if deposit.status is S.CREDITED:
        return _to(
            deposit,
            S.REVERSED,
            obs,
            Message("reversed_by_reorg"),
            Posting.REVERSAL,
            keep_block=True,
        )
    return None


def _is_stale(deposit: DepositState, obs: Observation) -> bool:
    """True when ``obs`` says nothing newer than what we hold."""
    moved = obs.block_hash is not None and obs.block_hash != deposit.block_hash
    if deposit.status in (S.ORPHANED, S.REVERSED):
        if obs.provider_status is not None:
            return True  # a provider's reversal is final; late callbacks must not reopen it
        # back only when mined again in another block (a replay of the removed block is stale)
        return obs.block_hash is not None and not moved
    if obs.provider_status is not None:
        return False
    assert obs.confirmations is not None
    return not moved and obs.confirmations <= deposit.confirmations


def _chain_progress(
    deposit: DepositState | None, obs: Observation, asset: Asset, required: int
) -> Transition | None:
    assert obs.confirmations is not None
    confirmations = obs.confirmations
    if confirmations >= required:
        message = Message("confirmed", {"confirmations": confirmations})
        return _to(deposit, S.CREDITED, obs, message, Posting.CREDIT, required)
    if confirmations == 0:
        # in the mempool, or in the newest block; a deposit already known gets here only when
        # it moved to another block (the stale check above drops everything else)
        return _to(
            deposit,
            S.PENDING,
            obs,
            Message("awaiting_first_confirmation", {"required": required}),
            None,
            required,
        )
    remaining = required - confirmations
    eta = round(remaining * asset.block_time_seconds)
    message = Message("awaiting_confirmations", {"remaining": remaining, "eta_seconds": eta})
    return _to(deposit, S.CONFIRMING, obs, message, None, required)


def _provider_progress(
    deposit: DepositState | None, obs: Observation, required: int
) -> Transition | None:
    status = deposit.status if deposit else None
    match obs.provider_status:
        case ProviderStatus.SUCCEEDED:
            return _to(
                deposit,
                S.CREDITED,
                obs,
                _provider_message("provider_confirmed", obs),
                Posting.CREDIT,
                required,
            )
        case ProviderStatus.FAILED | ProviderStatus.REVERSED:
            if status in (S.ORPHANED, S.REVERSED):
                return None
            assert isinstance(obs.ref, ProviderRef)
            failure = payment_failure(obs.ref.provider, obs.provider_reason)
            return _to(deposit, S.FAILED, obs, failure, None, required)
        case ProviderStatus.CONFIRMING:
            confirmations = obs.confirmations or 0
            stale = deposit is not None and confirmations <= deposit.confirmations
            if status is S.CONFIRMING and stale:
                return None
            assert isinstance(obs.ref, ProviderRef)
            message = Message(
                "provider_confirming",
                {"provider": obs.ref.provider, "confirmations": confirmations},
            )
            return _to(deposit, S.CONFIRMING, obs, message, None, required)
        case _:
            if status in (S.PENDING, S.CONFIRMING):
                return None
            return _to(
                deposit, S.PENDING, obs, _provider_message("provider_pending", obs), None, required
            )


def _provider_message(code: str, obs: Observation) -> Message:
    assert isinstance(obs.ref, ProviderRef)
    return Message(code, {"provider": obs.ref.provider})


def _to(
    deposit: DepositState | None,
    to_status: DepositStatus,
    obs: Observation,
    reason: Message,
    posting: Posting | None,
    required: int | None = None,
    *,
    keep_block: bool = False,
) -> Transition:
    if required is None:
        assert deposit is not None
        required = deposit.required_confirmations
    if keep_block:
        assert deposit is not None
        block_hash, block_number = deposit.block_hash, deposit.block_number
        confirmations = 0
    else:
        block_hash, block_number = obs.block_hash, obs.block_number
        confirmations = obs.confirmations or 0
    return Transition(
        from_status=deposit.status if deposit else None,
        to_status=to_status,
        confirmations=confirmations,
        required_confirmations=required,
        reason=reason,
        posting=posting,
        block_hash=block_hash,
        block_number=block_number,
    )


def first_sight(
    deposit_id: str,
    obs: Observation,
    merchant_id: str,
    user_id: str,
    user_external_id: str,
    transition: Transition,
    now: datetime,
) -> DepositState:
    """A deposit seen for the first time, after its first ``transition`` (version 1)."""
    if transition.from_status is not None:
        raise IllegalTransition("a first sighting must start from no status")
    return DepositState(
        id=deposit_id,
        ref=obs.ref,
        merchant_id=merchant_id,
        user_id=user_id,
        user_external_id=user_external_id,
        asset=obs.asset,
        amount=obs.amount,
        status=transition.to_status,
        confirmations=transition.confirmations,
        required_confirmations=transition.required_confirmations,
        block_hash=transition.block_hash,
        block_number=transition.block_number,
        tx_hash=obs.ref.tx_hash if isinstance(obs.ref, ChainRef) else None,
        version=1,
        credit_generation=0,
        reason=transition.reason,
        created_at=now,
        updated_at=now,
    )


def apply(deposit: DepositState, transition: Transition, now: datetime) -> DepositState:
    """The deposit after ``transition``: one version later."""
    if transition.from_status is not deposit.status:
        raise IllegalTransition(
            f"transition from {transition.from_status} applied to a {deposit.status} deposit"
        )
    generation = deposit.credit_generation + (transition.posting is Posting.REVERSAL)
    return dataclasses.replace(
        deposit,
        status=transition.to_status,
        confirmations=transition.confirmations,
        required_confirmations=transition.required_confirmations,
        block_hash=transition.block_hash,
        block_number=transition.block_number,
        version=deposit.version + 1,
        credit_generation=generation,
        reason=transition.reason,
        updated_at=now,
    )
