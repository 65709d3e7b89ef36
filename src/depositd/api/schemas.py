"""The JSON shapes the API accepts and returns (and documents in OpenAPI)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from eth_utils.address import to_checksum_address
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from depositd.domain.assets import Asset
from depositd.domain.deposits import DepositState, ProviderStatus
from depositd.domain.messages import render
from depositd.domain.money import format_amount
from depositd.domain.orders import DEFAULT_EXPIRY, MAX_EXPIRY, MIN_EXPIRY, OrderMethod
from depositd.services.orders import OrderDetail
from depositd.services.users import User

EXTERNAL_ID = r"^[A-Za-z0-9._:@-]{1,128}$"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProblemOut(BaseModel):
    """An RFC 9457 problem; ``type`` is stable: ``urn:depositd:problem:<slug>``."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI descriptions of the problem answers a route can give."""
    meaning = {
        400: "Malformed JSON",
        401: "Missing, unknown or revoked API key",
        404: "Not found (or another merchant's)",
        409: "The request clashes with the resource's state",
        413: "Request body too large",
        422: "Input that cannot be accepted",
    }
    schema = ProblemOut.model_json_schema()
    return {
        code: {
            "description": meaning[code],
            "content": {"application/problem+json": {"schema": schema}},
        }
        for code in codes
    }


class UserIn(_In):
    external_id: StrictStr = Field(pattern=EXTERNAL_ID, description="your id for this user")


class UserOut(BaseModel):
    id: str
    external_id: str
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(id=user.id, external_id=user.external_id, created_at=user.created_at)


class AddressIn(_In):
    chain: StrictStr = Field(min_length=1, max_length=40, description="a configured chain")


class AddressOut(BaseModel):
    chain: str
    #: EIP-55 checksummed
    address: str
    #: child index under the merchant's xpub (m/44'/60'/0'/0/index)
    index: int | None


class ObservationIn(_In):
    """A deposit your own payment system saw (a provider you integrate yourself)."""

    provider: StrictStr = Field(pattern=r"^[a-z0-9_-]{1,40}$")
    provider_deposit_id: StrictStr = Field(min_length=1, max_length=200)
    user: StrictStr = Field(pattern=EXTERNAL_ID, description="the user's external_id")
    asset: StrictStr = Field(min_length=1, max_length=40)
    amount: StrictStr = Field(
        description="decimal string in whole units, e.g. '12.5'", max_length=100
    )
    status: ProviderStatus
    confirmations: int | None = Field(None, ge=0, le=1_000_000, strict=True)


class Reason(BaseModel):
    code: str
    params: dict[str, Any]
    hint: str


class DepositOut(BaseModel):
    id: str
    user: dict[str, str]
    asset: str
    amount: str
    amount_base_units: str
    status: str
    confirmations: int
    required_confirmations: int
    tx_hash: str | None
    block_number: int | None
    version: int
    reason: Reason
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, deposit: DepositState, asset: Asset, language: str) -> DepositOut:
        return cls(
            id=deposit.id,
            user={"id": deposit.user_id, "external_id": deposit.user_external_id},
            asset=deposit.asset,
            amount=format_amount(deposit.amount, asset.decimals),
            amount_base_units=str(deposit.amount),
            status=deposit.status.value,
            confirmations=deposit.confirmations,
            required_confirmations=deposit.required_confirmations,
            tx_hash=deposit.tx_hash,
            block_number=deposit.block_number,
            version=deposit.version,
            reason=Reason(
                code=deposit.reason.code,
                params=dict(deposit.reason.params),
                hint=deposit.reason.render(language),
            ),
            created_at=deposit.created_at,
            updated_at=deposit.updated_at,
        )


class Transition(BaseModel):
    seq: int
    version: int
    status: str
    confirmations: int
    reason: Reason
    at: datetime

    @classmethod
    def of(cls, data: dict[str, Any], language: str) -> Transition:
        reason = data["reason"]
        return cls(
            seq=data["seq"],
            version=data["version"],
            status=data["status"],
            confirmations=data["confirmations"],
            at=data["at"],
            reason=Reason(
                code=reason["code"],
                params=reason["params"],
                hint=render(reason["code"], reason["params"], language),
            ),
        )


class DepositDetail(DepositOut):
    transitions: list[Transition]


class DepositPage(BaseModel):
    data: list[DepositOut]
    next_cursor: str | None


class ObservationOut(BaseModel):
    deposit: DepositOut | None
    changed: bool
    seq: int | None


class BalanceOut(BaseModel):
    asset: str
    available: str
    available_base_units: str
    locked: str
    locked_base_units: str


class BalancesOut(BaseModel):
    user: UserOut
    balances: list[BalanceOut]


class TransactionOut(BaseModel):
    id: int
    user: dict[str, str]
    asset: str
    side: str
    kind: str
    amount: str
    amount_base_units: str
    deposit_id: str
    created_at: datetime


class TransactionPage(BaseModel):
    data: list[TransactionOut]
    next_cursor: str | None


class EventOut(BaseModel):
    id: str
    seq: int
    type: str
    timestamp: str
    data: dict[str, Any]


class EventPage(BaseModel):
    data: list[EventOut]
    #: pass as ``after`` to continue; equals the request's ``after`` when nothing is new
    next_after: int


def format_balance(asset: Asset, available: int, locked: int) -> BalanceOut:
    return BalanceOut(
        asset=asset.code,
        available=format_amount(available, asset.decimals),
        available_base_units=str(available),
        locked=format_amount(locked, asset.decimals),
        locked_base_units=str(locked),
    )


class OrderIn(_In):
    user: StrictStr = Field(pattern=EXTERNAL_ID, description="the user's external_id")
    asset: StrictStr = Field(min_length=1, max_length=40)
    amount: StrictStr | None = Field(
        None,
        max_length=100,
        description="decimal string in whole units, e.g. '12.5'; leave out to accept any amount",
    )
    method: OrderMethod = Field(
        OrderMethod.CRYPTO, description="only 'crypto' for now: an on-chain transfer"
    )
    expires_in_seconds: int = Field(
        int(DEFAULT_EXPIRY.total_seconds()),
        ge=int(MIN_EXPIRY.total_seconds()),
        le=int(MAX_EXPIRY.total_seconds()),
        strict=True,
    )


class OrderDepositOut(BaseModel):
    id: str
    amount: str
    amount_base_units: str
    status: str
    #: first seen after the order's deadline
    late: bool
    created_at: datetime


class OrderProgressOut(BaseModel):
    #: awaiting_payment, confirming, paid, underpaid, overpaid or expired
    status: str
    #: a deposit that counts was first seen after the deadline
    paid_late: bool
    credited: str
    credited_base_units: str
    #: on its way: pending, confirming or held for review
    incoming: str
    incoming_base_units: str
    deposits: list[OrderDepositOut]


class OrderOut(BaseModel):
    id: str
    user: dict[str, str]
    method: str
    asset: str
    chain: str
    #: EIP-55 checksummed
    address: str
    #: None: any amount
    amount: str | None
    amount_base_units: str | None
    #: EIP-681 payment request
    payment_uri: str
    #: the payment URI as a QR code, an SVG document
    qr_svg: str
    expires_at: datetime
    expired_at: datetime | None
    created_at: datetime
    progress: OrderProgressOut

    @classmethod
    def of(cls, detail: OrderDetail, asset: Asset, qr_svg: str) -> OrderOut:
        order, progress = detail.order, detail.progress

        def amount(base_units: int) -> str:
            return format_amount(base_units, asset.decimals)

        return cls(
            id=order.id,
            user={"id": order.user_id, "external_id": order.user_external_id},
            method=order.method.value,
            asset=order.asset,
            chain=order.chain,
            address=to_checksum_address(order.address),
            amount=None if order.amount is None else amount(order.amount),
            amount_base_units=None if order.amount is None else str(order.amount),
            payment_uri=detail.payment_uri,
            qr_svg=qr_svg,
            expires_at=order.expires_at,
            expired_at=order.expired_at,
            created_at=order.created_at,
            progress=OrderProgressOut(
                status=progress.status.value,
                paid_late=progress.paid_late,
                credited=amount(progress.credited),
                credited_base_units=str(progress.credited),
                incoming=amount(progress.incoming),
                incoming_base_units=str(progress.incoming),
                deposits=[
                    OrderDepositOut(
                        id=p.deposit.id,
                        amount=amount(p.deposit.amount),
                        amount_base_units=str(p.deposit.amount),
                        status=p.deposit.status.value,
                        late=p.late,
                        created_at=p.deposit.created_at,
                    )
                    for p in progress.deposits
                ],
            ),
        )
