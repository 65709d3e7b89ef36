"""The JSON shapes the API accepts and returns (and documents in OpenAPI)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from eth_utils.address import to_checksum_address
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, StrictStr

from depositd.domain.assets import Asset
from depositd.domain.deposits import DepositState, DepositStatus, ProviderStatus
from depositd.domain.messages import Message, render
from depositd.domain.money import format_amount
from depositd.domain.orders import (
    DEFAULT_EXPIRY,
    MAX_EXPIRY,
    MIN_EXPIRY,
    OrderMethod,
    OrderStatus,
)
from depositd.qr import qr_svg
from depositd.services.orders import OrderDetail
from depositd.services.users import User

EXTERNAL_ID = r"^[A-Za-z0-9._:@-]{1,128}$"


def _iso_8601(value: Any) -> Any:
    """Only an RFC 3339 date-time, as documented: not a number read as a Unix time."""
    if isinstance(value, str) and not re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}", value):
        raise ValueError("use an RFC 3339 date-time with a UTC offset, e.g. 2026-11-29T08:00:00Z")
    return value


#: an aware date-time given as RFC 3339 text (pydantic would also take 1732867200 or "0.5")
Timestamp = Annotated[AwareDatetime, BeforeValidator(_iso_8601)]


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
        403: "The account may not do this yet",
        422: "Input that cannot be accepted",
        429: "Too many requests; see Retry-After",
        503: "Not available on this server",
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


class OrderTerms(_In):
    """What an order asks for: the user is the caller's to name (merchants) or is the caller
    (end users)."""

    asset: StrictStr = Field(min_length=1, max_length=40)
    amount: StrictStr | None = Field(
        None,
        max_length=100,
        description="decimal string in whole units, e.g. '12.5'; leave out to accept any amount",
    )
    method: OrderMethod = Field(
        OrderMethod.CRYPTO,
        description="'crypto': an on-chain transfer to the user's deposit address; 'card' or"
        " 'bank_transfer': a fiat payment (amount required) at the payment provider configured"
        " for the method",
    )
    expires_in_seconds: int = Field(
        int(DEFAULT_EXPIRY.total_seconds()),
        ge=int(MIN_EXPIRY.total_seconds()),
        le=int(MAX_EXPIRY.total_seconds()),
        strict=True,
    )


class OrderIn(OrderTerms):
    user: StrictStr = Field(pattern=EXTERNAL_ID, description="the user's external_id")


class OrderDepositOut(BaseModel):
    id: str
    amount: str
    amount_base_units: str
    status: str
    #: first seen after the order's deadline
    late: bool
    #: why it is where it is, in the reader's language (for a failed payment: what to do)
    hint: str
    created_at: datetime
    #: on-chain deposits: confirmations so far and how many it needs (0 and 0 otherwise)
    confirmations: int = 0
    required_confirmations: int = 0


class OrderProgressOut(BaseModel):
    #: awaiting_payment, confirming, paid, underpaid, overpaid, expired or failed
    status: str
    #: failed: the provider's reason and what the user can do about it
    hint: str | None = None
    #: a deposit that counts was first seen after the deadline
    paid_late: bool
    credited: str
    credited_base_units: str
    #: on its way: pending, confirming or held for review
    incoming: str
    incoming_base_units: str
    deposits: list[OrderDepositOut]


class PaymentOut(BaseModel):
    """A card or bank transfer order's payment at the provider."""

    provider: str
    #: the provider's id for the payment
    reference: str
    #: card: the provider's checkout page to send the user to
    redirect_url: str | None
    #: bank transfer: the account to pay and the reference to quote, as the provider gave them
    instructions: dict[str, Any] | None


class OrderOut(BaseModel):
    id: str
    user: dict[str, str]
    method: str
    asset: str
    #: crypto orders: the chain and the deposit address (EIP-55 checksummed)
    chain: str | None
    address: str | None
    #: None: any amount
    amount: str | None
    amount_base_units: str | None
    #: crypto orders: the EIP-681 payment request, and as a QR code (an SVG document)
    payment_uri: str | None
    qr_svg: str | None
    #: card and bank transfer orders: the payment at the provider
    payment: PaymentOut | None
    expires_at: datetime
    expired_at: datetime | None
    created_at: datetime
    progress: OrderProgressOut
    #: the user's page for this order (address, QR code, live progress); None when the
    #: dashboard has no key (``dashboard.secret_key``)
    status_url: str | None = None

    @classmethod
    def of(
        cls, detail: OrderDetail, asset: Asset, language: str, status_url: str | None = None
    ) -> OrderOut:
        order, progress = detail.order, detail.progress
        payment = order.payment
        failed = [p for p in progress.deposits if p.deposit.status is DepositStatus.FAILED]

        def amount(base_units: int) -> str:
            return format_amount(base_units, asset.decimals)

        return cls(
            id=order.id,
            user={"id": order.user_id, "external_id": order.user_external_id},
            method=order.method.value,
            asset=order.asset,
            chain=order.chain,
            address=None if order.address is None else to_checksum_address(order.address),
            amount=None if order.amount is None else amount(order.amount),
            amount_base_units=None if order.amount is None else str(order.amount),
            payment_uri=detail.payment_uri,
            qr_svg=None if detail.payment_uri is None else qr_svg(detail.payment_uri),
            payment=None
            if payment is None
            else PaymentOut(
                provider=payment.provider,
                reference=payment.reference,
                redirect_url=payment.redirect_url,
                instructions=None if payment.instructions is None else dict(payment.instructions),
            ),
            expires_at=order.expires_at,
            expired_at=order.expired_at,
            created_at=order.created_at,
            progress=OrderProgressOut(
                status=progress.status.value,
                hint=_hint(failed[-1].deposit.reason, language)
                if progress.status is OrderStatus.FAILED and failed
                else None,
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
                        hint=_hint(p.deposit.reason, language) or "",
                        created_at=p.deposit.created_at,
                        confirmations=p.deposit.confirmations,
                        required_confirmations=p.deposit.required_confirmations,
                    )
                    for p in progress.deposits
                ],
            ),
            status_url=status_url,
        )


def _hint(reason: Message | None, language: str) -> str | None:
    return None if reason is None else reason.render(language)
