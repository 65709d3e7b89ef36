"""Assets depositd accepts, as configured: chain, decimals, minimum and confirmation policy."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from depositd.domain.anomaly import AnomalyPolicy
from depositd.errors import UnknownAsset

#: the rolling window KYC deposit limits count credits over
LIMIT_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class ConfirmationTier:
    """Deposits of at least ``min_amount`` base units need ``confirmations`` confirmations."""

    min_amount: int
    confirmations: int


@dataclass(frozen=True)
class Asset:
    """One depositable asset on one chain.

    ``contract`` is None for the chain's native coin, else the token contract address
    (lower-case hex), the only contract whose transfers count as deposits of this asset.
    ``chain`` is None for a fiat currency (``decimals`` 2: amounts in cents), which only a
    payment provider's callbacks credit.
    """

    code: str
    #: None for a fiat currency, paid through a payment provider
    chain: str | None
    symbol: str
    decimals: int
    min_deposit: int
    confirmations: int
    contract: str | None = None
    block_time_seconds: float = 12.0
    tiers: tuple[ConfirmationTier, ...] = field(default=())
    #: (KYC level, the most base units credited to one user within ``LIMIT_WINDOW`` or None
    #: for no limit); a user's level uses the highest level listed at or below it
    kyc_limits: tuple[tuple[int, int | None], ...] = field(default=())
    #: anomaly detection's thresholds (None: off), and the amount a structuring run stays
    #: under when it is not the user's KYC limit
    anomaly: AnomalyPolicy | None = None
    anomaly_threshold: int | None = None

    @property
    def fiat(self) -> bool:
        return self.chain is None

    def kyc_limit(self, level: int) -> int | None:
        """The most a user at KYC ``level`` may have credited within ``LIMIT_WINDOW``."""
        applies = [(listed, limit) for listed, limit in self.kyc_limits if listed <= level]
        return max(applies)[1] if applies else None

    def required_confirmations(self, amount: int) -> int:
        """Confirmations needed before ``amount`` is credited: the highest tier it reaches."""
        required = self.confirmations
        for tier in self.tiers:
            if amount >= tier.min_amount:
                required = max(required, tier.confirmations)
        return required


class AssetBook(Mapping[str, Asset]):
    """The configured assets by code; looking up an unknown code raises ``UnknownAsset``."""

    def __init__(self, assets: Iterable[Asset]) -> None:
        self._by_code = {asset.code: asset for asset in assets}

    def __getitem__(self, code: str) -> Asset:
        try:
            return self._by_code[code]
        except KeyError:
            known = ", ".join(sorted(self._by_code)) or "none configured"
            raise UnknownAsset(f"unknown asset {code!r} (known: {known})") from None

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def get(self, code: str, default: Asset | None = None) -> Asset | None:  # type: ignore[override]
        return self._by_code.get(code, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_code)

    def __len__(self) -> int:
        return len(self._by_code)
