"""Events: what changed, as the webhook and event-log payload every consumer sees."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eth_utils.address import to_checksum_address

from depositd.domain.assets import Asset
from depositd.domain.deposits import ChainRef, DepositState
from depositd.domain.money import format_amount
from depositd.domain.orders import DepositOrder

#: every event type depositd emits (DESIGN §2)
EVENT_TYPES = (
    "deposit.pending",
    "deposit.confirming",
    "deposit.credited",
    "deposit.held",
    "deposit.rejected",
    "deposit.orphaned",
    "deposit.reversed",
    "deposit.failed",
    "deposit_order.expired",
    "endpoint.disabled",
    # asked for by the merchant (POST /v1/endpoints/{id}/test): queued for that endpoint only
    "endpoint.test",
)


@dataclass(frozen=True)
class PendingEvent:
    """An event to append; ``seq`` is assigned when the unit of work writes it."""

    id: str
    type: str
    merchant_id: str
    deposit_id: str | None
    version: int | None
    data: dict[str, Any]
    created_at: datetime


def deposit_event(event_id: str, deposit: DepositState, asset: Asset) -> PendingEvent:
    """The event announcing ``deposit``'s current state (its status names the type)."""
    ref = deposit.ref
    data: dict[str, Any] = {
        "id": deposit.id,
        "user": {"id": deposit.user_id, "external_id": deposit.user_external_id},
        "asset": asset.code,
        "chain": asset.chain,
        "amount": format_amount(deposit.amount, asset.decimals),
        "amount_base_units": str(deposit.amount),
        "tx_hash": deposit.tx_hash,
        "log_index": ref.log_index if isinstance(ref, ChainRef) else None,
        "provider": None if isinstance(ref, ChainRef) else ref.provider,
        "provider_deposit_id": None if isinstance(ref, ChainRef) else ref.deposit_id,
        "block_number": deposit.block_number,
        "confirmations": deposit.confirmations,
        "required_confirmations": deposit.required_confirmations,
        "status": deposit.status.value,
        "reason": {"code": deposit.reason.code, "params": dict(deposit.reason.params)},
        "hint": deposit.reason.render("en"),
        "version": deposit.version,
    }
    return PendingEvent(
        id=event_id,
        type=f"deposit.{deposit.status.value}",
        merchant_id=deposit.merchant_id,
        deposit_id=deposit.id,
        version=deposit.version,
        data=data,
        created_at=deposit.updated_at,
    )


def order_expired_event(
    event_id: str,
    order: DepositOrder,
    asset: Asset,
    credited: int,
    incoming: int,
    now: datetime,
) -> PendingEvent:
    """The event announcing that ``order``'s deadline passed without full payment.

    ``incoming`` says how much was still on its way: a payment made in time may yet be
    credited, and the order's status will then show it.
    """
    data: dict[str, Any] = {
        "id": order.id,
        "user": {"id": order.user_id, "external_id": order.user_external_id},
        "method": order.method.value,
        "asset": asset.code,
        "chain": order.chain,
        "address": None if order.address is None else to_checksum_address(order.address),
        "amount": None if order.amount is None else format_amount(order.amount, asset.decimals),
        "amount_base_units": None if order.amount is None else str(order.amount),
        "credited": format_amount(credited, asset.decimals),
        "credited_base_units": str(credited),
        "incoming": format_amount(incoming, asset.decimals),
        "incoming_base_units": str(incoming),
        "expires_at": order.expires_at.isoformat(),
        "expired_at": now.isoformat(),
    }
    if order.payment is not None:
        data["payment"] = {"provider": order.payment.provider, "reference": order.payment.reference}
    return PendingEvent(
        id=event_id,
        type="deposit_order.expired",
        merchant_id=order.merchant_id,
        deposit_id=None,
        version=None,
        data=data,
        created_at=now,
    )


def endpoint_event(
    event_id: str, kind: str, merchant_id: str, endpoint_id: str, now: datetime, **data: Any
) -> PendingEvent:
    """An ``endpoint.<kind>`` event (``test``, ``disabled``) about one webhook endpoint."""
    return PendingEvent(
        id=event_id,
        type=f"endpoint.{kind}",
        merchant_id=merchant_id,
        deposit_id=None,
        version=None,
        data={"endpoint_id": endpoint_id, **data},
        created_at=now,
    )
