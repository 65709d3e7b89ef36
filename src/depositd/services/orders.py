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

Only ``crypto`` orders exist yet: the user pays on chain to their deposit address, derived
from the merchant's xpub.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from depositd.clock import utcnow
from depositd.db.engine import Database
from depositd.db.transient import retry_transient
from depositd.db.uow import UnitOfWork
from depositd.domain.assets import AssetBook
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
from depositd.errors import InputError, InvalidAmount, NotFound
from depositd.ids import new_id
from depositd.services.addresses import deposit_address

#: orders the expiry sweeper decides per transaction
EXPIRY_BATCH = 500


class UnsupportedMethod(InputError):
    slug = "unsupported-method"


class InvalidExpiry(InputError):
    slug = "invalid-expiry"


@dataclass(frozen=True)
class OrderDetail:
    """An order, how far its payment got, and how to pay it."""

    order: DepositOrder
    progress: OrderProgress
    #: EIP-681 request a wallet can open (or scan as a QR code)
    payment_uri: str


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
    clock: Callable[[], datetime] = utcnow,
) -> OrderDetail:
    """Open an order for the user to pay ``amount`` base units (None: any amount).

    The user pays to their deposit address on the asset's chain, derived from the merchant's
    xpub if they have none yet (``XpubNotSet`` without one).
    """
    if method is not OrderMethod.CRYPTO:
        raise UnsupportedMethod(f"method {method.value!r} is not supported yet")
    asset = assets[asset_code]
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
    return OrderDetail(
        order,
        order_progress(order, [], now),
        payment_uri(asset, chain_ids[asset.chain], order.address, amount),
    )


async def get_order(
    db: Database,
    chain_ids: Mapping[str, int],
    assets: AssetBook,
    merchant_id: str,
    order_id: str,
    *,
    clock: Callable[[], datetime] = utcnow,
) -> OrderDetail:
    """The merchant's order with its progress (another merchant's is ``NotFound``)."""
    async with UnitOfWork(db, write=False) as uow:
        order = await uow.orders.get(merchant_id, order_id)
        if order is None:
            raise NotFound(f"no deposit order {order_id}")
        attributed = await uow.orders.attributed_deposits([order.id])
    asset = assets[order.asset]
    return OrderDetail(
        order,
        order_progress(order, attributed[order.id], clock()),
        payment_uri(asset, chain_ids[order.chain], order.address, order.amount),
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
