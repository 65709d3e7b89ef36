"""Assets: tiered confirmation policy and the book of configured assets."""

from __future__ import annotations

import pytest

from depositd.domain.assets import Asset, AssetBook, ConfirmationTier
from depositd.errors import InputError, UnknownAsset

ETHER = 10**18


def _eth(*tiers: ConfirmationTier, confirmations: int = 3) -> Asset:
    return Asset(
        code="ETH",
        chain="eth",
        symbol="ETH",
        decimals=18,
        min_deposit=10**15,
        confirmations=confirmations,
        tiers=tiers,
    )


def _usdt() -> Asset:
    return Asset(
        code="USDT",
        chain="eth",
        symbol="USDT",
        decimals=6,
        min_deposit=10**6,
        confirmations=12,
        contract="0xdac17f958d2ee523a2206206994597c13d831ec7",
    )


TIERED = _eth(ConfirmationTier(10 * ETHER, 6), ConfirmationTier(100 * ETHER, 12))


def test_without_tiers_every_amount_needs_the_base_confirmations() -> None:
    asset = _eth()
    assert asset.required_confirmations(1) == 3
    assert asset.required_confirmations(10**30) == 3


@pytest.mark.parametrize(
    ("amount", "required"),
    [
        (1, 3),
        (10 * ETHER - 1, 3),
        (10 * ETHER, 6),
        (50 * ETHER, 6),
        (100 * ETHER - 1, 6),
        (100 * ETHER, 12),
        (10**30, 12),
    ],
)
def test_required_confirmations_is_the_highest_tier_reached(amount: int, required: int) -> None:
    assert TIERED.required_confirmations(amount) == required


def test_tier_order_in_the_configuration_does_not_matter() -> None:
    reversed_tiers = _eth(*reversed(TIERED.tiers))
    for amount in (1, 10 * ETHER, 100 * ETHER, 10**30):
        assert reversed_tiers.required_confirmations(amount) == TIERED.required_confirmations(
            amount
        )


def test_a_tier_never_lowers_the_base_requirement() -> None:
    asset = _eth(ConfirmationTier(10 * ETHER, 1), confirmations=5)
    assert asset.required_confirmations(50 * ETHER) == 5


def test_asset_book_finds_assets_by_code() -> None:
    book = AssetBook([_eth(), _usdt()])
    assert book["USDT"].decimals == 6
    assert book["ETH"].symbol == "ETH"
    assert len(book) == 2
    assert sorted(book) == ["ETH", "USDT"]


def test_unknown_asset_code_raises_unknown_asset_listing_known_codes() -> None:
    book = AssetBook([_usdt(), _eth()])
    with pytest.raises(UnknownAsset) as caught:
        book["BTC"]
    message = str(caught.value)
    assert "'BTC'" in message
    assert "ETH, USDT" in message  # sorted, so the message is stable
    assert isinstance(caught.value, InputError)
    assert caught.value.slug == "unknown-asset"


def test_unknown_asset_in_an_empty_book_says_none_are_configured() -> None:
    with pytest.raises(UnknownAsset, match="none configured"):
        AssetBook([])["ETH"]


def test_asset_codes_are_case_sensitive() -> None:
    with pytest.raises(UnknownAsset):
        AssetBook([_eth()])["eth"]


def test_membership_of_an_unknown_code_is_false() -> None:
    assert "BTC" not in AssetBook([_eth()])


def test_get_of_an_unknown_code_returns_the_default() -> None:
    assert AssetBook([_eth()]).get("BTC") is None
