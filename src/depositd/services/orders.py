"""Deposit orders: ask a user to pay an asset by a deadline, follow the payment, expire it.

Attribution. A user has one deposit address per chain, so two orders of the same asset
cannot be told apart by where the money went: a user's orders of one asset are taken as
sequential. A deposit belongs to the latest order of its user and asset created at or before
the deposit was first seen (its ``created_at``); so an order's deposits are that user's
deposits of that asset first seen from the order's creation until the next such order was
created (orders created at the same instant are ordered by id). Deposits first seen before
the user's first order of the asset belong to none. Rejected, orphaned, failed and reversed
deposits are listed with their order but count toward neither its credited nor its incoming
total (``domain.orders.order_progress``).

A ``crypto`` order is paid on chain to the user's deposit address, derived from the
merchant's xpub. A ``card`` or ``bank_transfer`` order is paid through the payment provider
configured for the merchant and method: the payment is started there first (our order id as
its idempotency key), and only an order the provider accepted is stored, with the provider's
payment id as its reference. Its deposits are those the provider's callbacks report under
that reference, not a time window, so a user may have several such orders open at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

import structlog

from depositd.clock import utcnow
from depositd.db.engine import Database
from depositd.db.transient import retry_transient
from depositd.db.uow import UnitOfWork
from depositd.domain.assets import Asset, AssetBook
from depositd.domain.events import order_expired_event
from depositd.domain.money import format_amount
from depositd.domain.orders import (
    MAX_EXPIRY,
    MIN_EXPIRY,
    DepositOrder,
    OrderMethod,
    OrderProgress,
    is_fully_paid,
    order_progress,
    payment_uri,
)
from depositd.errors import InputError, InvalidAmount, NotFound, UpstreamUnavailable
from depositd.ids import new_id
from depositd.providers.payments import PaymentGateways, PaymentRequest, PaymentUnavailable
from depositd.services.addresses import deposit_address

log = structlog.get_logger("depositd.orders")

#: orders the expiry sweeper decides per transaction
EXPIRY_BATCH = 500


class UnsupportedMethod(InputError):
    slug = "unsupported-method"


class InvalidExpiry(InputError):
    slug = "invalid-expiry"


class MethodMismatch(InputError):
    slug = "method-asset-mismatch"


class PaymentProviderUnavailable(UpstreamUnavailable):
    """The payment provider did not start the payment; nothing was stored."""

    slug = "payment-provider-unavailable"


@dataclass(frozen=True)
class OrderDetail:
    """An order, how far its payment got, and how to pay it."""

    order: DepositOrder
    progress: OrderProgress
    #: crypto: the EIP-681 request a wallet can open (or scan as a QR code)
    payment_uri: str | None


async def create_order(
    db: Database,
    chain_ids: Mapping[str, int],
    assets: AssetBook,
    merchant_id: str,
    external_id: str,
    asset_code: str,
    amount: int | None,
    expires_in: timedelta,
    *,
    method: OrderMethod = OrderMethod.CRYPTO,
    gateways: PaymentGateways | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> OrderDetail:
    """Open an order for the user to pay ``amount`` base units (None: any amount).

    Crypto: the user pays to their deposit address on the asset's chain, derived from the
    merchant's xpub if they have none yet (``XpubNotSet`` without one). Card and bank
    transfer: the payment is started at the merchant's provider for the method, for the
    exact amount of a fiat asset.
    """
    asset = assets[asset_code]
    if asset.fiat != method.through_provider:
        kind = "a fiat currency" if method.through_provider else "an on-chain asset"
        raise MethodMismatch(f"method {method.value!r} pays {kind}; {asset.code} is not one")
    if amount is not None:
        if amount <= 0:
            raise InvalidAmount("amount must be greater than zero")
        if amount < asset.min_deposit:
            # a deposit below the minimum is rejected, so such an order could never be paid
            minimum = format_amount(asset.min_deposit, asset.decimals)
            raise InvalidAmount(
                f"amount {format_amount(amount, asset.decimals)} {asset.symbol} is below"
                f" the {minimum} {asset.symbol} minimum deposit"
            )
    if not MIN_EXPIRY <= expires_in <= MAX_EXPIRY:
        raise InvalidExpiry(
            f"an order expires between {MIN_EXPIRY.total_seconds():.0f} and"
            f" {MAX_EXPIRY.total_seconds():.0f} seconds after it is made"
        )
    if method.through_provider:
        return await _through_provider(
            db, gateways, merchant_id, external_id, asset, amount, method, expires_in, clock()
        )
    assert asset.chain is not None
    address = await deposit_address(db, chain_ids, merchant_id, external_id, asset.chain)
    async with UnitOfWork(db, write=True) as uow:
        user = await uow.users.get(merchant_id, external_id)
        if user is None:
            raise NotFound(f"no user {external_id!r}")
        now = clock()
        order = DepositOrder(
            id=new_id("ord"),
            merchant_id=merchant_id,
            user_id=user.id,
            user_external_id=user.external_id,
            method=method,
            asset=asset.code,
            chain=asset.chain,
            address=address.address.lower(),
            amount=amount,
            expires_at=now + expires_in,
            expired_at=None,
            created_at=now,
        )
        await uow.orders.add(order)
        await uow.commit()
    return OrderDetail(order, order_progress(order, [], now), _uri(chain_ids, asset, order))


async def _through_provider(
    db: Database,
    gateways: PaymentGateways | None,
    merchant_id: str,
    external_id: str,
    asset: Asset,
    amount: int | None,
    method: OrderMethod,
    expires_in: timedelta,
    now: datetime,
) -> OrderDetail:
    gateway = None if gateways is None else gateways.get(merchant_id, method)
    if gateway is None:
        raise UnsupportedMethod(f"no payment provider takes {method.value} payments here")
    if amount is None:
        raise InvalidAmount(f"a {method.value} payment needs an amount")
    async with UnitOfWork(db, write=False) as uow:
        user = await uow.users.get(merchant_id, external_id)
    if user is None:
        raise NotFound(f"no user {external_id!r}")
    order_id, expires_at = new_id("ord"), now + expires_in
    request = PaymentRequest(order_id, method, amount, asset.symbol, external_id, expires_at)
    try:
        payment = await gateway.create_payment(request)
    except PaymentUnavailable as exc:
        log.warning("payment provider did not start a payment", order=order_id, error=str(exc))
        raise PaymentProviderUnavailable(
            f"the payment provider could not start the {method.value} payment; try again"
        ) from exc
    order = DepositOrder(
        id=order_id,
        merchant_id=merchant_id,
        user_id=user.id,
        user_external_id=user.external_id,
        method=method,
        asset=asset.code,
        chain=None,
        address=None,
        amount=amount,
        expires_at=expires_at,
        expired_at=None,
        created_at=now,
        payment=payment,
    )
    async with UnitOfWork(db, write=True) as uow:
        await uow.orders.add(order)
        await uow.commit()
    log.info("payment started", order=order_id, provider=payment.provider,
             reference=payment.reference, method=method.value)  # fmt: skip
    return OrderDetail(order, order_progress(order, [], now), None)


def _uri(chain_ids: Mapping[str, int], asset: Asset, order: DepositOrder) -> str | None:
    if order.chain is None or order.address is None:
        return None
    return payment_uri(asset, chain_ids[order.chain], order.address, order.amount)


async def get_order(
    db: Database,
    chain_ids: Mapping[str, int],
    assets: AssetBook,
    merchant_id: str | None,
    order_id: str,
    *,
    clock: Callable[[], datetime] = utcnow,
) -> OrderDetail:
    """The merchant's order with its progress (another merchant's is ``NotFound``);
    ``merchant_id`` None: whoever's it is (a status page whose link was checked)."""
    async with UnitOfWork(db, write=False) as uow:
        order = await uow.orders.get(merchant_id, order_id)
        if order is None:
            raise NotFound(f"no deposit order {order_id}")
        attributed = await uow.orders.attributed_deposits([order.id])
    return OrderDetail(
        order,
        order_progress(order, attributed[order.id], clock()),
        _uri(chain_ids, assets[order.asset], order),
    )


async def expire_due_orders(db: Database, assets: AssetBook, now: datetime) -> int:
    """Expire every order past its deadline at ``now`` and not fully paid; how many.

    Each expiry sets ``expired_at`` and appends a ``deposit_order.expired`` event (with its
    outbox rows) in the same transaction. An order fully paid by its deadline is only marked
    as decided. Safe to run repeatedly and from several processes at once: an order is
    decided once, so its event is appended once. Orders of assets no longer configured are
    left alone.
    """
    expired = 0
    while True:
        decided, announced = await retry_transient(partial(_expire_batch, db, assets, now))
        expired += announced
        if decided < EXPIRY_BATCH:
            return expired


async def _expire_batch(db: Database, assets: AssetBook, now: datetime) -> tuple[int, int]:
    """Decide one batch of due orders; (orders decided, orders expired)."""
    async with UnitOfWork(db, write=True) as uow:
        due = await uow.orders.claim_due(now, assets, EXPIRY_BATCH)
        if not due:
            return 0, 0
        attributed = await uow.orders.attributed_deposits(order.id for order in due)
        progress = {order.id: order_progress(order, attributed[order.id], now) for order in due}
        paid = {o.id for o in due if is_fully_paid(o.amount, progress[o.id].credited)}
        unpaid = [order for order in due if order.id not in paid]
        announced = await uow.orders.decide_expiry([o.id for o in unpaid], paid, now)
        events = [
            order_expired_event(
                new_id("evt"),
                order,
                assets[order.asset],
                progress[order.id].credited,
                progress[order.id].incoming,
                now,
            )
            for order in unpaid
            if order.id in announced
        ]
        await uow.events.append(events, now)
        await uow.commit()
    return len(due), len(events)
