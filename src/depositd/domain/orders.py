"""Deposit orders: payment URIs (EIP-681) and how far the deposits attributed to one got.

An order asks a user to pay an asset (optionally an exact amount) before a deadline: on chain
to their deposit address (``crypto``), or through a payment provider (``card``,
``bank_transfer``), which gives the order a payment reference. Which deposits belong to which
order is decided by the service (see ``depositd.services.orders``); here we only judge the
deposits we are given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from eth_utils.address import to_checksum_address

from depositd.domain.assets import Asset
from depositd.domain.deposits import DepositStatus
from depositd.domain.messages import Message

#: shortest and longest time an order may stay open
MIN_EXPIRY = timedelta(seconds=60)
MAX_EXPIRY = timedelta(days=7)
DEFAULT_EXPIRY = timedelta(hours=1)


class OrderMethod(StrEnum):
    """How the user pays."""

    #: an on-chain transfer to the user's deposit address
    CRYPTO = "crypto"
    #: a bank transfer through a payment provider, quoting the reference it gave the order
    BANK_TRANSFER = "bank_transfer"
    #: a card payment on the payment provider's checkout page
    CARD = "card"

    @property
    def through_provider(self) -> bool:
        """Paid through a payment provider (fiat), not on chain."""
        return self is not OrderMethod.CRYPTO


class OrderStatus(StrEnum):
    """Where an order stands, judged from its credited and incoming deposits."""

    #: nothing arrived yet, and the order is still open
    AWAITING_PAYMENT = "awaiting_payment"
    #: something is on its way (pending, confirming or held), nothing credited yet
    CONFIRMING = "confirming"
    #: credited exactly the amount asked (or anything, when no amount was asked)
    PAID = "paid"
    #: credited less than the amount asked
    UNDERPAID = "underpaid"
    #: credited more than the amount asked
    OVERPAID = "overpaid"
    #: the deadline passed with nothing credited or on its way
    EXPIRED = "expired"
    #: paid through a provider, which reports that the payment failed (the deposit's hint
    #: says why, and what the user can do); a new order starts a new payment
    FAILED = "failed"


#: deposits whose amount counts as arriving: not final yet, and may still be credited
INCOMING = frozenset({DepositStatus.PENDING, DepositStatus.CONFIRMING, DepositStatus.HELD})


@dataclass(frozen=True)
class Payment:
    """Where a fiat order is paid: the payment provider's reference and what the user needs."""

    provider: str
    #: the provider's id for the payment, which its callbacks carry as the deposit id
    reference: str
    #: card: the provider's checkout page
    redirect_url: str | None = None
    #: bank transfer: the account to pay and the reference to quote, as the provider gave them
    instructions: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class DepositOrder:
    """A request that a user pay ``asset`` before ``expires_at``: on chain to ``address``, or
    through a payment provider (``payment``)."""

    id: str
    merchant_id: str
    user_id: str
    user_external_id: str
    method: OrderMethod
    asset: str
    #: crypto orders: the chain and the user's deposit address there (lower-case hex)
    chain: str | None
    address: str | None
    #: base units; None lets the user pay any amount
    amount: int | None
    expires_at: datetime
    #: set by the expiry sweeper when the deadline passed without full payment
    expired_at: datetime | None
    created_at: datetime
    #: fiat orders: the payment at the provider
    payment: Payment | None = None


@dataclass(frozen=True)
class AttributedDeposit:
    """A deposit attributed to an order: what its progress needs to know of it."""

    id: str
    amount: int
    status: DepositStatus
    #: when we first saw it
    created_at: datetime
    #: why it is where it is (``Message`` code and parameters): the user's hint
    reason: Message | None = None
    #: on-chain deposits: blocks on top of its block so far, and how many it needs
    confirmations: int = 0
    required_confirmations: int = 0


@dataclass(frozen=True)
class DepositProgress:
    deposit: AttributedDeposit
    #: first seen after the order's deadline
    late: bool


@dataclass(frozen=True)
class OrderProgress:
    status: OrderStatus
    #: base units credited to the user by the order's deposits
    credited: int
    #: base units on their way (pending, confirming, held for review)
    incoming: int
    #: a deposit that counts (credited or incoming) was first seen after the deadline
    paid_late: bool
    #: every attributed deposit, oldest first, including those that will never count
    deposits: tuple[DepositProgress, ...]


def is_fully_paid(amount: int | None, credited: int) -> bool:
    """True once an order needs nothing more: its amount credited, or any credit at all."""
    return credited > 0 if amount is None else credited >= amount


def order_progress(
    order: DepositOrder, deposits: Iterable[AttributedDeposit], now: datetime
) -> OrderProgress:
    """Judge ``order`` by the deposits attributed to it, as of ``now``.

    Credited deposits make up ``credited``; pending, confirming and held ones ``incoming``;
    rejected, orphaned, failed and reversed ones are listed but count for nothing. With a
    credit the status compares it with the amount asked; without one, something incoming
    means ``confirming``, a payment the provider failed makes a fiat order ``failed``, else
    the deadline decides between ``awaiting_payment`` and ``expired``.
    """
    listed = tuple(
        DepositProgress(deposit, late=deposit.created_at > order.expires_at)
        for deposit in sorted(deposits, key=lambda d: (d.created_at, d.id))
    )
    credited = sum(p.deposit.amount for p in listed if p.deposit.status is DepositStatus.CREDITED)
    incoming = sum(p.deposit.amount for p in listed if p.deposit.status in INCOMING)
    paid_late = any(
        p.late and (p.deposit.status is DepositStatus.CREDITED or p.deposit.status in INCOMING)
        for p in listed
    )
    return OrderProgress(
        status=_status(order, listed, credited, incoming, now),
        credited=credited,
        incoming=incoming,
        paid_late=paid_late,
        deposits=listed,
    )


def _status(
    order: DepositOrder,
    listed: tuple[DepositProgress, ...],
    credited: int,
    incoming: int,
    now: datetime,
) -> OrderStatus:
    if credited > 0:
        if order.amount is None or credited == order.amount:
            return OrderStatus.PAID
        return OrderStatus.UNDERPAID if credited < order.amount else OrderStatus.OVERPAID
    if incoming > 0:
        return OrderStatus.CONFIRMING
    if order.method.through_provider and any(
        p.deposit.status is DepositStatus.FAILED for p in listed
    ):
        return OrderStatus.FAILED
    if order.expired_at is not None or now >= order.expires_at:
        return OrderStatus.EXPIRED
    return OrderStatus.AWAITING_PAYMENT


def payment_uri(asset: Asset, chain_id: int, address: str, amount: int | None) -> str:
    """The EIP-681 request to pay ``amount`` base units of ``asset`` to ``address``.

    Native coin: ``ethereum:<address>@<chain id>?value=<wei>``. ERC-20 token: a call of the
    token contract's ``transfer``, ``ethereum:<contract>@<chain id>/transfer?address=
    <address>&uint256=<base units>``. Amounts are plain integers in base units (EIP-681 also
    allows ``2.014e18``; plain digits are exact and every wallet reads them). Without an
    amount the parameter is left out, and the wallet asks the user how much to send.
    """
    to = to_checksum_address(address)
    if asset.contract is None:
        uri = f"ethereum:{to}@{chain_id}"
        return uri if amount is None else f"{uri}?value={amount}"
    uri = f"ethereum:{to_checksum_address(asset.contract)}@{chain_id}/transfer?address={to}"
    return uri if amount is None else f"{uri}&uint256={amount}"
