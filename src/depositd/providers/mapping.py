"""From a provider's callback body to what it claims about a deposit, by configured pointers."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from depositd.config import PayloadMapping
from depositd.domain.assets import AssetBook
from depositd.domain.deposits import Observation, ProviderRef, ProviderStatus, ToUser
from depositd.domain.money import parse_amount
from depositd.errors import InvalidAmount, UnknownAsset


class PayloadRejected(Exception):
    """The body does not say what the mapping needs; ``code`` is stable, ``str()`` one line."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True)
class ProviderClaim:
    """What one callback says about one deposit, in our terms."""

    #: the provider's id for this message: a replay carries the same one
    event_id: str
    deposit_id: str
    #: the merchant's id for the user
    user: str
    asset: str
    #: base units
    amount: int
    status: ProviderStatus
    confirmations: int | None = None
    tx_hash: str | None = None
    #: the address the provider says received it
    address: str | None = None
    #: why the payment failed, in the provider's words (a code like ``insufficient_funds``)
    reason: str | None = None

    def observation(self, merchant_id: str, provider: str) -> Observation:
        return Observation(
            ref=ProviderRef(merchant_id, provider, self.deposit_id),
            owner=ToUser(merchant_id, self.user),
            asset=self.asset,
            amount=self.amount,
            provider_status=self.status,
            confirmations=self.confirmations,
            provider_reason=self.reason,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "deposit_id": self.deposit_id,
            "user": self.user,
            "asset": self.asset,
            "amount": str(self.amount),
            "status": self.status.value,
            "confirmations": self.confirmations,
            "tx_hash": self.tx_hash,
            "address": self.address,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProviderClaim:
        return cls(
            event_id=data["event_id"],
            deposit_id=data["deposit_id"],
            user=data["user"],
            asset=data["asset"],
            amount=int(data["amount"]),
            status=ProviderStatus(data["status"]),
            confirmations=data["confirmations"],
            tx_hash=data["tx_hash"],
            address=data.get("address"),
            reason=data.get("reason"),
        )


_MISSING = object()
#: longest id, user or status a callback may carry (the columns that keep them allow this)
MAX_FIELD_CHARS = 128


def resolve(document: Any, pointer: str) -> Any:
    """The value at a JSON pointer (RFC 6901), or ``_MISSING``."""
    node = document
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            node = node.get(token, _MISSING)
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return _MISSING
        if node is _MISSING:
            return _MISSING
    return node


def read_claim(
    mapping: PayloadMapping, assets: AssetBook, body: Any, message_id: str | None
) -> ProviderClaim:
    """What ``body`` (parsed JSON) claims; ``PayloadRejected`` says what is missing or wrong."""

    def text(field: str, pointer: str) -> str:
        value = resolve(body, pointer)
        if value is _MISSING or value is None or value == "":
            raise PayloadRejected("field_missing", f"{field}: nothing at {pointer}")
        if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
            raise PayloadRejected("field_invalid", f"{field} at {pointer}: not a string or number")
        if len(str(value)) > MAX_FIELD_CHARS:
            raise PayloadRejected("field_invalid", f"{field}: longer than {MAX_FIELD_CHARS}")
        return str(value)

    deposit_id = text("deposit_id", mapping.deposit_id)
    theirs = text("status", mapping.status)
    status = mapping.statuses.get(theirs)
    if status is None:
        known = ", ".join(sorted(mapping.statuses))
        raise PayloadRejected("status_unknown", f"status {theirs!r} is not mapped (known: {known})")
    asset_name = text("asset", mapping.asset)
    code = mapping.assets.get(asset_name, asset_name)
    try:
        asset = assets[code]
    except UnknownAsset as exc:
        raise PayloadRejected("asset_unknown", str(exc)) from None
    amount_text = text("amount", mapping.amount)
    try:
        if mapping.amount_unit == "base":
            if not amount_text.isdigit():
                raise InvalidAmount(f"{amount_text!r} is not a whole number of base units")
            amount = int(amount_text)
        else:
            amount = parse_amount(amount_text, asset.decimals)
    except InvalidAmount as exc:
        raise PayloadRejected("amount_invalid", f"amount: {exc}") from None
    if amount <= 0:
        raise PayloadRejected("amount_invalid", "amount: must be positive")
    confirmations = None
    if mapping.confirmations is not None:
        found = resolve(body, mapping.confirmations)
        if found is not _MISSING and found is not None:
            if isinstance(found, bool) or not str(found).isdigit():
                raise PayloadRejected("field_invalid", "confirmations: not a whole number")
            confirmations = int(found)
    if mapping.event_id is not None:
        event_id = text("event_id", mapping.event_id)
    else:
        event_id = message_id or f"{deposit_id}:{theirs}"
    tx_hash = _optional_text(body, mapping.tx_hash)
    address = _optional_text(body, mapping.address)
    reason = _optional_text(body, mapping.reason)
    return ProviderClaim(
        event_id=event_id,
        deposit_id=deposit_id,
        user=text("user", mapping.user),
        asset=asset.code,
        amount=amount,
        status=status,
        confirmations=confirmations,
        tx_hash=tx_hash,
        address=address,
        reason=reason,
    )


def _optional_text(body: Any, pointer: str | None) -> str | None:
    if pointer is None:
        return None
    found = resolve(body, pointer)
    return found if isinstance(found, str) and found and len(found) <= MAX_FIELD_CHARS else None
